#!/usr/bin/env bash
# A COW device of 8 sectors with 512-byte chunks holds the header, one
# metadata area and 6 exceptions.
#  P: origin writes of 6 chunks fill it (8/8 2); the 7th chunk overflows it:
#     the origin write still succeeds, the snapshot turns Invalid, dm-snapshot
#     logs "Invalidating snapshot: Unable to allocate exception.", the header
#     on disk gets valid=0, and after remove+create the snapshot is still
#     Invalid ("Snapshot is marked invalid.").
#  PO: writes to the snapshot device itself fill it; the 7th chunk's write
#     fails, the status is Overflow (not Invalid), reads still work, every
#     later write fails, the header keeps valid=1, and after remove+create the
#     snapshot is valid again with its 6 exceptions and data.
# Same observations with our store as with the C store.
# timeout: 300
# cost: 45
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/failure-lib.sh"

make_pattern "$TMP/orig" 64
make_pattern "$TMP/new" 8

setup() {
	make_ram_disks 2 64
	dm_remove_all_on_exit
	write_at /dev/ram0 "$TMP/orig" 0
	slice cow /dev/ram1 0 8
}

observe_p() {
	setup
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/mapper/cow P 1)"
	dmsetup create base --table "$(origin_table /dev/ram0)"
	echo "P fresh: $(snapshot_status snap)"
	echo "P write 6 chunks to origin: $(ok_or_failed write_sectors /dev/mapper/base "$TMP/new" 0 6)"
	echo "P full: $(snapshot_status snap)"
	same_data "P snapshot when full" /dev/mapper/snap 0 "$TMP/orig"
	kmsg_mark
	echo "P write 7th chunk to origin: $(ok_or_failed write_sectors /dev/mapper/base "$TMP/new" 6 1)"
	echo "P after overflow: $(snapshot_status snap)"
	dm_msgs | sed 's/^/P log: /'
	cmp -s <(read_at /dev/mapper/base 0 3) <(head -c 3072 "$TMP/new") || fail "P: origin does not hold the new data"
	echo "P snapshot read after overflow: $(ok_or_failed read_at /dev/mapper/snap 0 1)"
	dmsetup remove snap
	echo "P header (magic valid version chunk): $(header_fields /dev/mapper/cow)"
	kmsg_mark
	echo "P create again: $(try_create snap "$(snapshot_table /dev/ram0 /dev/mapper/cow P 1)")"
	echo "P after re-create: $(snapshot_status snap)"
	dm_msgs | sed 's/^/P log: /'
	dmsetup remove snap
	echo "P cow checksum: $(cow_sum /dev/mapper/cow)"
}

observe_po() {
	setup
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/mapper/cow PO 1)"
	echo "PO table: $(dmsetup table snap | cut -d' ' -f6-)"
	echo "PO fresh: $(snapshot_status snap)"
	echo "PO write 6 chunks to snapshot: $(ok_or_failed write_sectors /dev/mapper/snap "$TMP/new" 0 6)"
	echo "PO full: $(snapshot_status snap)"
	kmsg_mark
	echo "PO write 7th chunk to snapshot: $(ok_or_failed write_sectors /dev/mapper/snap "$TMP/new" 6 1)"
	echo "PO after overflow: $(snapshot_status snap)"
	dm_msgs | sed 's/^/PO log: /'
	echo "PO read after overflow: $(ok_or_failed read_at /dev/mapper/snap 0 3)"
	cmp -s <(read_at /dev/mapper/snap 0 3) <(head -c 3072 "$TMP/new") || fail "PO: snapshot lost its 6 written chunks"
	cmp -s <(read_at /dev/mapper/snap 3 29) <(tail -c +3073 "$TMP/orig" | head -c $((29 * 1024))) ||
		fail "PO: snapshot past the written chunks is not the origin's data"
	echo "PO rewrite of an existing chunk after overflow: $(ok_or_failed write_sectors /dev/mapper/snap "$TMP/new" 0 1)"
	dmsetup remove snap
	echo "PO header (magic valid version chunk): $(header_fields /dev/mapper/cow)"
	kmsg_mark
	echo "PO create again: $(try_create snap "$(snapshot_table /dev/ram0 /dev/mapper/cow PO 1)")"
	echo "PO after re-create: $(snapshot_status snap)"
	dm_msgs | sed 's/^/PO log: /'
	cmp -s <(read_at /dev/mapper/snap 0 3) <(head -c 3072 "$TMP/new") || fail "PO: data lost across re-create"
	cmp -s <(read_at /dev/mapper/snap 3 29) <(tail -c +3073 "$TMP/orig" | head -c $((29 * 1024))) ||
		fail "PO: snapshot past the written chunks is not the origin's data after re-create"
	echo "PO write after re-create (full COW): $(ok_or_failed write_sectors /dev/mapper/snap "$TMP/new" 7 1)"
	echo "PO status then: $(snapshot_status snap)"
	dmsetup remove snap
	echo "PO cow checksum: $(cow_sum /dev/mapper/cow)"
}

same_on_both_stores observe_p
o=$TMP/ours.out
expect_line "$o" 'P full: 8/8 2' "P: a COW of 8 sectors should report 8/8 2 once full"
expect_line "$o" 'P write 7th chunk to origin: ok' "P: the overflowing origin write must succeed"
expect_line "$o" 'P after overflow: Invalid' "P: overflow must invalidate the snapshot"
expect_text "$o" 'Invalidating snapshot: Unable to allocate exception.' "P: no invalidation message"
expect_line "$o" 'P header (magic valid version chunk): 1883336275 0 1 1' "P: header not marked invalid on disk"
expect_line "$o" 'P after re-create: Invalid' "P: snapshot valid again after re-create"
expect_text "$o" 'Snapshot is marked invalid.' "P: no 'Snapshot is marked invalid.' on re-create"

same_on_both_stores observe_po
o=$TMP/ours.out
expect_line "$o" 'PO table: PO 1' "PO: table does not show PO 1"
expect_line "$o" 'PO write 7th chunk to snapshot: failed' "PO: the overflowing snapshot write must fail"
expect_line "$o" 'PO after overflow: Overflow' "PO: status must be Overflow"
expect_text "$o" 'Snapshot overflowed: Unable to allocate exception.' "PO: no overflow message"
expect_line "$o" 'PO header (magic valid version chunk): 1883336275 1 1 1' "PO: header must stay valid"
expect_line "$o" 'PO after re-create: 8/8 2' "PO: snapshot not valid and full after re-create"
