#!/usr/bin/env bash
# A module init that fails half-way must leave nothing that a table load can
# reach: dm-snapshot looks store types up by "P" (and "N") only, so our
# module registers "persistent" first and "P" last, as its last step that can
# fail. With a test module holding "P", our init fails on its second
# registration (EBUSY, logged) and unregisters "persistent", while table
# loads naming P run in a loop (they reach the holder, which refuses them):
# no oops, no warning, our module is not left loaded, and once the holder is
# gone our module loads and serves a snapshot.
# timeout: 240
# cost: 40
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/failure-lib.sh"

holder=$TOP/tests/modules/dm_snap_test_holder.ko
[ -f "$holder" ] || fail "$holder not built (the test kernel builds it)"
load_dm_snapshot none
modprobe dm-bufio
make_ram_disks 2 64
dm_remove_all_on_exit
table=$(snapshot_table /dev/ram0 /dev/ram1 P 8)

insmod "$holder" name=P
on_exit "rmmod dm_snap_test_holder"

# Table loads naming P in a loop, until told to stop. Each refused load
# logs two lines; a short pause keeps them from flooding the kernel log
# ring, from which the harness reads any oops.
(
	while [ ! -e "$TMP/stop" ]; do
		command dmsetup create snap --table "$table" >/dev/null 2>&1 && command dmsetup remove snap >/dev/null 2>&1
		sleep 0.05
	done
) &
loads=$!

kmsg_mark
failed=0
for i in $(seq 1 30); do
	if insmod "$MODULE_KO" 2>/dev/null; then
		rmmod dm_snap_persistent
		fail "our module loaded although P is held"
	fi
	failed=$((failed + 1))
done
touch "$TMP/stop"
wait "$loads" || true
echo "insmod failed $failed times while P was held"
if kmsg_since | grep -E -q 'BUG:|WARNING:|Oops|general protection'; then
	kmsg_since >&2
	fail "the kernel reported a problem"
fi
[ ! -d /sys/module/dm_snap_persistent ] || fail "our module is loaded after its init failed"
# The failure names the type, as C's does.
kmsg_mark
insmod "$MODULE_KO" 2>/dev/null && fail "our module loaded although P is held"
expect_kmsg "persistent snapshot: Unable to register old-style persistent exception store type"

# Without the holder, our module loads and serves P.
rmmod dm_snap_test_holder
insmod "$MODULE_KO"
on_exit "rmmod dm_snap_persistent"
expect_eq "load with our store" created "$(try_create snap "$table")"
dmsetup remove snap
