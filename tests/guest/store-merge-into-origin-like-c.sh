#!/usr/bin/env bash
# Merging a snapshot back into its origin. A snapshot with 512-byte chunks
# gets 48 exceptions over two metadata areas: 43 from origin writes (one
# 40-chunk write, so they are committed in order, and 3 more after) and 5
# from writes to the snapshot itself. The origin is then suspended, the
# snapshot removed and the origin reloaded as `snapshot-merge`; once the
# merge is done (allocated == metadata in the status, polled with a bound)
# the origin holds exactly what the snapshot showed before the merge, and the
# COW device holds an empty store. Statuses and checksums are the same with
# our store as with the C store, including the COW device left behind (byte
# for byte).
# timeout: 400
# cost: 38
. "$DMSNAP_HARNESS/lib.sh"

# The same data for both stores.
make_pattern "$TMP/orig" 512
make_pattern "$TMP/onorig" 20
make_pattern "$TMP/onsnap" 3

observe() {
	make_ram_disks 2 512
	dm_remove_all_on_exit
	write_at /dev/ram0 "$TMP/orig" 0
	local size
	size=$(sectors /dev/ram0)
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 1)"
	dmsetup create base --table "$(origin_table /dev/ram0)"

	# 40 origin chunks 0..39 in one write, then 5 snapshot chunks 100..104
	# (two of them, 100 and 101, in chunks the origin never touched) and
	# 3 more origin chunks 200..202 (after the snapshot writes)
	write_sectors /dev/mapper/base "$TMP/onorig" 0 40
	write_sectors /dev/mapper/snap "$TMP/onsnap" 100 5
	write_sectors /dev/mapper/base "$TMP/onorig" 200 3
	echo "before merge: $(snapshot_status snap)"
	local want origin_before
	want=$(cow_sum /dev/mapper/snap)
	origin_before=$(cow_sum /dev/mapper/base)
	[ "$want" != "$origin_before" ] || fail "snapshot and origin already alike"
	echo "snapshot view: $want"

	dmsetup suspend base
	dmsetup remove snap
	dmsetup reload base --table "0 $size snapshot-merge /dev/ram0 /dev/ram1 P 1"
	dmsetup resume base
	echo "merge table: $(dmsetup table base | cut -d' ' -f3,6-)"

	echo "merged: $(wait_merged base)"
	expect_eq "origin after merge holds the snapshot's view" "$want" "$(cow_sum /dev/mapper/base)"
	dmsetup remove base
	echo "origin: $(cow_sum /dev/ram0)"
	echo "cow: $(cow_sum /dev/ram1)"
	# A new snapshot on the merged COW device: an empty store.
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 1)"
	echo "reloaded merged cow: $(snapshot_status snap)"
	expect_eq "snapshot of merged cow" "$want" "$(cow_sum /dev/mapper/snap)"
	dmsetup remove snap
}
same_on_both_stores observe
if test_dmesg | grep -E -q 'shutting down merge|can.t merge'; then
	fail "the kernel stopped a merge: $(test_dmesg | grep -E 'merge' | head -n3)"
fi
