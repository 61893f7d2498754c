#!/usr/bin/env bash
# With 512-byte chunks an area holds 32 exceptions (stride 33: area 0 at
# chunk 1, area 1 at chunk 34). Commit 31 (next_free right before a metadata
# area), 32 (exactly one full area) and 40 (a partial second area)
# exceptions, reload the snapshot from its COW device, commit more, reload
# again: the snapshot keeps its data, no metadata is overwritten, and the COW
# device ends up byte-identical to what the C store writes.
# timeout: 400
# cost: 84
. "$DMSNAP_HARNESS/lib.sh"

# The same data for both stores.
make_pattern "$TMP/orig" 512
make_pattern "$TMP/new1" 20
make_pattern "$TMP/new2" 2

# round N ORIGIN COW
round() {
	local n=$1 origin=$2 cow=$3
	write_at "$origin" "$TMP/orig" 0
	# The snapshot first: the origin target splits writes at the chunk size
	# of the snapshots it knows when it is resumed.
	dmsetup create snap --table "$(snapshot_table "$origin" "$cow" P 1)"
	dmsetup create base --table "$(origin_table "$origin")"

	# n exceptions in one write: chunks 0..n-1, committed in order
	write_sectors /dev/mapper/base "$TMP/new1" 0 "$n"
	echo "$n: after $n: $(snapshot_status snap)"
	dmsetup remove snap
	dmsetup create snap --table "$(snapshot_table "$origin" "$cow" P 1)"
	echo "$n: reloaded: $(snapshot_status snap)"
	same_data "snapshot after reload" /dev/mapper/snap 0 "$TMP/orig"

	# 4 more exceptions further on (old chunks 128..131)
	write_sectors /dev/mapper/base "$TMP/new2" 128 4
	echo "$n: after 4 more: $(snapshot_status snap)"
	dmsetup remove snap
	dmsetup create snap --table "$(snapshot_table "$origin" "$cow" P 1)"
	echo "$n: reloaded again: $(snapshot_status snap)"
	same_data "snapshot after second reload" /dev/mapper/snap 0 "$TMP/orig"
	cmp -s <(read_at /dev/mapper/base 0 $((n / 2))) <(head -c $((n * 512)) "$TMP/new1") ||
		[ $((n % 2)) -eq 1 ] || fail "origin does not hold the new data"
	dmsetup remove snap base
	echo "$n: cow checksum: $(cow_sum "$cow")"
}

# Each case on fresh RAM disks, all cases under one store load.
observe() {
	make_ram_disks 6 1024
	dm_remove_all_on_exit
	round 31 /dev/ram0 /dev/ram1
	round 32 /dev/ram2 /dev/ram3
	round 40 /dev/ram4 /dev/ram5
}

same_on_both_stores observe
