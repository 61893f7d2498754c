#!/usr/bin/env bash
# The harness's own check, off unless DMSNAP_SELFTEST names a way to break
# the guest: oops (BUG() in the kernel), warn (a WARNING), hang (a task stuck
# in uninterruptible sleep), panic (the guest dies: no result comes back, and
# the host boots a fresh guest for the tests after this one). Each must make
# this test, and the run, fail.
# timeout: 60
# cost: 2
. "$DMSNAP_HARNESS/lib.sh"

case "${DMSNAP_SELFTEST:-}" in
"") skip "set DMSNAP_SELFTEST=oops|warn|hang|panic to break the guest on purpose" ;;
oops) what=BUG ;;
warn) what=WARNING ;;
hang) what=HUNG_TASK ;;
panic) what=PANIC ;;
*) fail "unknown DMSNAP_SELFTEST=$DMSNAP_SELFTEST" ;;
esac
modprobe lkdtm
note "provoking $what"
echo "$what" > /sys/kernel/debug/provoke-crash/DIRECT
