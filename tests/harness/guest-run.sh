#!/usr/bin/env bash
# Runs inside the guest: each test in turn, leaving its output, exit status
# and kernel log in RESDIR (shared read-write with the host), which reads
# them back. Before a test starts, RESDIR/NAME.started holds its timeout, so
# the host can tell a hung guest from a slow test.
#   guest-run.sh RESDIR LIST
# LIST is a file naming one test script per line: the host passes a file,
# not the scripts, because the guest's command line (virtme-ng puts the
# command there) is limited to 2,048 bytes and a long list overflows it.
set -u
res=$1
list=$2
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t tests < "$list"

export DM_DISABLE_UDEV=1 LVM_SUPPRESS_FD_WARNINGS=1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug 2>/dev/null
echo "kernel $(uname -r), $(nproc) cpus" > "$res/guest-info"
# The hung-task detector's timeout (30 s in kernel/guest.config) is scaled
# like the tests' deadlines: on the debug kernel a KUnit case that fails
# each allocation in turn keeps insmod waiting for it longer than that.
ht=/proc/sys/kernel/hung_task_timeout_secs
if [ -w "$ht" ] && [ "$(cat "$ht")" -gt 0 ]; then
	echo $(($(cat "$ht") * ${DMSNAP_TIMEOUT_FACTOR:-1})) > "$ht"
fi

for t in "${tests[@]}"; do
	name=$(basename "$t" .sh)
	timeout_s=$(sed -n 's/^# timeout: *\([0-9]*\).*/\1/p' "$t" | head -n1)
	timeout_s=$((${timeout_s:-300} * ${DMSNAP_TIMEOUT_FACTOR:-1}))
	echo "$timeout_s" > "$res/$name.started"
	sync
	echo "dmsnap-test: begin $name" > /dev/kmsg
	DMSNAP_TEST_NAME=$name DMSNAP_RESULTS=$res DMSNAP_HARNESS=$here \
		timeout -k 10 "$timeout_s" bash "$t" > "$res/$name.log" 2>&1 < /dev/null
	rc=$?
	echo "dmsnap-test: end $name rc=$rc" > /dev/kmsg
	dmesg > "$res/$name.dmesg" 2>&1
	echo "$rc" > "$res/$name.rc"
	sync
done
# A kernel with kmemleak: scan once the tests are done. Objects younger than
# 5 s are not reported, so the last test's get time to age; the host reads
# the report back and fails the run on any unreferenced object.
if [ -w /sys/kernel/debug/kmemleak ]; then
	sleep 6
	echo scan > /sys/kernel/debug/kmemleak
	cat /sys/kernel/debug/kmemleak > "$res/kmemleak-$(basename "$list" .list)" 2>&1
fi
echo done > "$res/guest-done"
sync
