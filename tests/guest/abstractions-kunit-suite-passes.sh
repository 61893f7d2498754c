#!/usr/bin/env bash
# The KUnit suite of the device-mapper abstractions (rust/dm_snap_kunit.rs)
# passes: dm-io round trips with FUA on a RAM disk, dm-bufio reads with
# prefetch and forget, run-and-wait on an owned workqueue, store type
# registration under two names and its EBUSY case, commit completions that
# fail when dropped, DMEMIT-like status output. Each KUnit case is reported
# to the host as a test of its own.
# timeout: 180
. "$DMSNAP_HARNESS/lib.sh"

ko=$TOP/rust/dm_snap_kunit.ko
[ -f "$ko" ] || fail "$ko not built (the kernel needs CONFIG_KUNIT=y)"
load_dm_snapshot c
make_ram_disks 1 16384
modprobe dm-bufio

insmod "$ko"
on_exit "rmmod dm_snap_kunit"
ktap=$(test_dmesg | sed -n '/# Subtest: dm_snap_abstractions/,/ok [0-9]* dm_snap_abstractions$/p')
echo "$ktap"
[ -n "$ktap" ] || fail "no KTAP output of suite dm_snap_abstractions in the kernel log"
report_ktap_cases "$ktap"
echo "$ktap" | grep -E -q '^ok [0-9]+ dm_snap_abstractions$' || fail "suite dm_snap_abstractions did not pass"
