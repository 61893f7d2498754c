#!/usr/bin/env bash
# While our store serves a snapshot, the module is in use (refcnt > 0) and
# `rmmod dm_snap_persistent` fails, leaving the snapshot working; once the
# snapshot is removed the refcount is back to 0 and the module unloads
# cleanly (no kernel splat: the runner checks the log).
# timeout: 120
# cost: 12
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/failure-lib.sh"

make_pattern "$TMP/orig" 64
make_pattern "$TMP/new" 4

use_store ours
make_ram_disks 2 64
dm_remove_all_on_exit
write_at /dev/ram0 "$TMP/orig" 0
expect_eq "refcnt before any snapshot" 0 "$(cat /sys/module/dm_snap_persistent/refcnt)"

dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 8)"
dmsetup create base --table "$(origin_table /dev/ram0)"
refcnt=$(cat /sys/module/dm_snap_persistent/refcnt)
note "refcnt with a snapshot: $refcnt"
[ "$refcnt" -gt 0 ] || fail "refcnt is 0 while a snapshot uses the store"

kmsg_mark
expect_fail "rmmod while a snapshot uses the store" rmmod dm_snap_persistent
[ -d /sys/module/dm_snap_persistent ] || fail "the module went away while in use"
kmsg_since

# the snapshot still works
write_at /dev/mapper/base "$TMP/new" 0
expect_eq "status after a 4 KiB write" "24/128 16" "$(snapshot_status snap)"
same_data "snapshot" /dev/mapper/snap 0 "$TMP/orig"

dmsetup remove snap
expect_eq "refcnt after the snapshot is removed" 0 "$(cat /sys/module/dm_snap_persistent/refcnt)"
rmmod dm_snap_persistent
[ ! -d /sys/module/dm_snap_persistent ] || fail "the module is still loaded after rmmod"

# with the store gone, a P table is refused, and the origin still works
expect_fail "P table with no store" dmsetup create snap2 --table "$(snapshot_table /dev/ram0 /dev/ram1 P 8)"
write_at /dev/mapper/base "$TMP/new" 8
same_data "origin" /dev/mapper/base 8 "$TMP/new"
