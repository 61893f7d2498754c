#!/usr/bin/env bash
# A snapshot made with 8 KiB chunks (P 16) and loaded again with a table
# asking for 4 KiB chunks (P 8) keeps 8 KiB chunks: the kernel logs "chunk
# size 16 in device metadata overrides table chunk size of 8.", `dmsetup
# table` shows P 16 (devices as major:minor), the usage figures are those of
# 8 KiB chunks, the snapshot still holds the origin's old data, and new
# exceptions after the reload take 8 KiB chunks too. Same with both stores.
# timeout: 240
# cost: 22
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/failure-lib.sh"

make_pattern "$TMP/orig" 128
make_pattern "$TMP/new1" 16
make_pattern "$TMP/new2" 8

observe() {
	make_ram_disks 2 128
	dm_remove_all_on_exit
	write_at /dev/ram0 "$TMP/orig" 0
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 16)"
	dmsetup create base --table "$(origin_table /dev/ram0)"
	write_at /dev/mapper/base "$TMP/new1" 0
	echo "P 16 after a 16 KiB write: $(snapshot_status snap)"
	dmsetup remove snap
	echo "header (magic valid version chunk): $(header_fields /dev/ram1)"

	kmsg_mark
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 8)"
	echo "reloaded with P 8, table: $(dmsetup table snap)"
	echo "status: $(snapshot_status snap)"
	dm_msgs | sed 's/^/log: /'
	same_data "snapshot after the reload" /dev/mapper/snap 0 "$TMP/orig"

	# the origin splits writes at the chunk size it saw at its last resume
	dmsetup suspend base
	dmsetup resume base
	write_at /dev/mapper/base "$TMP/new2" 64
	echo "after an 8 KiB write at 64 KiB: $(snapshot_status snap)"
	same_data "snapshot after a write past the reload" /dev/mapper/snap 0 "$TMP/orig"
	dmsetup remove snap
	echo "header (magic valid version chunk): $(header_fields /dev/ram1)"
	echo "cow checksum: $(cow_sum /dev/ram1)"
}

same_on_both_stores observe
o=$TMP/ours.out
expect_line "$o" 'reloaded with P 8, table: 0 256 snapshot 1:0 1:1 P 16' "the table does not show P 16"
grep -qx 'log: device-mapper: persistent snapshot: chunk size 16 in device metadata overrides table chunk size of 8.' "$o" ||
	fail "no override warning"
expect_line "$o" 'header (magic valid version chunk): 1883336275 1 1 16' "the header's chunk size changed"
expect_line "$o" 'status: 64/256 32' "usage after the reload is not that of 8 KiB chunks"
expect_line "$o" 'after an 8 KiB write at 64 KiB: 80/256 32' "a new exception after the reload is not one 8 KiB chunk"
