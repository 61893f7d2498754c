#!/usr/bin/env bash
# dm-snapshot loaded with persistent_store=0 leaves "P" unregistered: a P
# snapshot table is refused with dm's own message while N still works.
# Loading it again with the default brings the C store back in the same boot.
# timeout: 180
# cost: 8
. "$DMSNAP_HARNESS/lib.sh"

make_ram_disks 2 4096
dm_remove_all_on_exit
origin=/dev/ram0 cow=/dev/ram1

load_dm_snapshot none
expect_eq "persistent_store parameter" N "$(cat /sys/module/dm_snapshot/parameters/persistent_store)"
expect_fail "P table without the C store" \
	dmsetup create snap --table "$(snapshot_table $origin $cow P 16)"
expect_dmesg "snapshot: Couldn't create exception store"
dmsetup create tsnap --table "$(snapshot_table $origin $cow N 16)"
dmsetup remove tsnap

note "swap back to dm-snapshot with its C store"
rmmod dm_snapshot
load_dm_snapshot c
expect_eq "persistent_store parameter" Y "$(cat /sys/module/dm_snapshot/parameters/persistent_store)"
dmsetup create snap --table "$(snapshot_table $origin $cow P 16)"
expect_eq "table" "0 $(sectors $origin) snapshot 1:0 1:1 P 16" "$(dmsetup table snap)"
