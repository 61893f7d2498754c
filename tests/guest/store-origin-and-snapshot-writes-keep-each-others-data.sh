#!/usr/bin/env bash
# Writes to the origin leave the snapshot's view of the old data intact, and
# writes to the snapshot leave the origin untouched, with both stores alike.
# timeout: 180
# cost: 26
. "$DMSNAP_HARNESS/lib.sh"

make_pattern "$TMP/old" 256
make_pattern "$TMP/origin-new" 16
make_pattern "$TMP/snap-new" 16
# Expected slices of the old data (same_data needs regular files).
dd if="$TMP/old" of="$TMP/old-0" bs=1024 count=16 status=none
dd if="$TMP/old" of="$TMP/old-64" bs=1024 skip=64 count=16 status=none
dd if="$TMP/old" of="$TMP/old-80" bs=1024 skip=80 status=none

observe() {
	make_ram_disks 2 1024
	dm_remove_all_on_exit
	write_at /dev/ram0 "$TMP/old" 0
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 8)"
	dmsetup create base --table "$(origin_table /dev/ram0)"

	write_at /dev/mapper/base "$TMP/origin-new" 0
	write_at /dev/mapper/snap "$TMP/snap-new" 64
	echo "status: $(snapshot_status snap)"

	same_data "snapshot keeps the origin's old data" /dev/mapper/snap 0 "$TMP/old-0"
	same_data "origin has its new data" /dev/mapper/base 0 "$TMP/origin-new"
	same_data "snapshot has its own write" /dev/mapper/snap 64 "$TMP/snap-new"
	same_data "origin is untouched by the snapshot write" /dev/mapper/base 64 "$TMP/old-64"
	same_data "rest of the origin unchanged" /dev/mapper/base 80 "$TMP/old-80"
	echo "origin: $(cow_sum /dev/mapper/base)"
	echo "snapshot: $(cow_sum /dev/mapper/snap)"
}
same_on_both_stores observe
