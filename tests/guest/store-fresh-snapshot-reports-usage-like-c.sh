#!/usr/bin/env bash
# A new snapshot reports header plus one metadata area as allocated and as
# metadata (2 chunks); after one 4 KiB origin write into a 100 KiB COW with
# 4 KiB chunks it reports 24/200 sectors, which lvm2 shows as 12.00%.
# Same figures from our store as from the C store.
# timeout: 240
# cost: 18
. "$DMSNAP_HARNESS/lib.sh"

observe() {
	make_ram_disks 2 100
	dm_remove_all_on_exit
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 8)"
	dmsetup create base --table "$(origin_table /dev/ram0)"
	echo "fresh: $(snapshot_status snap)"
	echo "table: $(dmsetup table snap | cut -d' ' -f6-)"
	make_pattern "$TMP/4k" 4
	write_at /dev/mapper/base "$TMP/4k" 0
	echo "after one 4 KiB write: $(snapshot_status snap)"
}
same_on_both_stores observe
expect_eq "fresh status" "fresh: 16/200 16" "$(sed -n 1p "$TMP/ours.out")"
expect_eq "status after one write" "after one 4 KiB write: 24/200 16" "$(sed -n 3p "$TMP/ours.out")"
