#!/usr/bin/env bash
# With dm-snapshot's stock C store: a P snapshot keeps reading the origin's
# old data after the origin is overwritten, and still does after a table
# reload and after the snapshot is removed and created again from its COW.
# timeout: 180
# cost: 11
. "$DMSNAP_HARNESS/lib.sh"

load_dm_snapshot c
make_ram_disks 2 4096
dm_remove_all_on_exit
origin=/dev/ram0 cow=/dev/ram1

make_pattern "$TMP/old" 256
make_pattern "$TMP/new" 256
write_at $origin "$TMP/old" 1024

dmsetup create snap --table "$(snapshot_table $origin $cow P 16)"
dmsetup create base --table "$(origin_table $origin)"
expect_eq "status before writes" "$(snapshot_table $origin $cow P 16 | cut -d' ' -f1-3)" \
	"$(dmsetup table snap | cut -d' ' -f1-3)"

note "overwrite the origin through the snapshot-origin device"
write_at /dev/mapper/base "$TMP/new" 1024
same_data "origin after write" /dev/mapper/base 1024 "$TMP/new"
same_data "snapshot after origin write" /dev/mapper/snap 1024 "$TMP/old"

note "reload the snapshot table"
dmsetup reload snap --table "$(snapshot_table $origin $cow P 16)"
dmsetup suspend snap
dmsetup resume snap
same_data "snapshot after reload" /dev/mapper/snap 1024 "$TMP/old"

note "remove the snapshot and create it again from the COW device"
dmsetup remove snap
dmsetup create snap --table "$(snapshot_table $origin $cow P 16)"
same_data "snapshot after re-create" /dev/mapper/snap 1024 "$TMP/old"
same_data "origin after re-create" /dev/mapper/base 1024 "$TMP/new"
status=$(dmsetup status snap)
note "status: $status"
case "$status" in
*" snapshot "*/*" "*) ;;
*) fail "unexpected snapshot status '$status'" ;;
esac
