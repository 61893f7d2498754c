#!/usr/bin/env bash
# A COW device written by one store is read right by the other, both ways,
# on the same RAM disks kept across store switches (512-byte chunks, 32
# exceptions per area):
# (a) the C store writes 80 exceptions over three areas (60 from one origin
#     write, 20 from one snapshot write); our store loads them with the same
#     status, the same snapshot and origin data, and snap_dump of the COW
#     device (no table on it) is the same before and after our store had it;
#     our store adds 15 exceptions (origin and snapshot writes, also to
#     chunks that already have one); the C store loads all 95 with our
#     status, data and dump, and adds 2 more that both stores reload.
# (b) a COW device merged completely into the origin by one store holds an
#     empty store for the other: status "2/2048 2" (allocated == metadata),
#     the snapshot shows the merged origin, snap_dump lists no exception.
#     Both ways: merged by C and loaded by ours, merged by ours and loaded
#     by C.
# (c) a COW device invalidated by overflow under one store (37 data chunks,
#     50 chunks written) is loaded as "Invalid" by the other, both ways; the
#     header chunk each store leaves is the same, snap_dump shows valid="0".
# timeout: 600
# cost: 109
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/compat-lib.sh"

TOOLS=$(snap_tools)

# ram0: origin, ram1: COW of (a) and of (b) C-merged, ram2: COW of (b)
# merged by ours, ram3: COW of (c). 1 MiB each: 2048 chunks of 512 bytes.
make_ram_disks 4 1024
make_pattern "$TMP/orig" 1024
make_pattern "$TMP/p1" 40
make_pattern "$TMP/p2" 10
make_pattern "$TMP/p3" 10
make_pattern "$TMP/p4" 3
make_pattern "$TMP/p5" 2
write_at /dev/ram0 "$TMP/orig" 0
# What the origin and the snapshot of (a) must show, kept in step.
cp "$TMP/orig" "$TMP/want-origin"
cp "$TMP/orig" "$TMP/want-snap"

exceptions() {
	grep -c '<exception ' "$1" || true
}

# A snapshot of ram0 on ram1, with the origin after it.
up() {
	dmsetup create snap --table "$(snapshot_table /dev/ram0 "${1:-/dev/ram1}" P 1)"
	dmsetup create base --table "$(origin_table /dev/ram0)"
}
down() {
	dmsetup remove snap
	dmsetup remove base
}
check_views() {
	expect_eq "$1: snapshot data" "$(file_sum "$TMP/want-snap")" "$(cow_sum /dev/mapper/snap)"
	expect_eq "$1: origin data" "$(file_sum "$TMP/want-origin")" "$(cow_sum /dev/mapper/base)"
}

note "(a) C writes 80 exceptions"
a_c_writes() {
	dm_remove_all_on_exit
	up
	write_sectors /dev/mapper/base "$TMP/p1" 0 60
	write_sectors /dev/mapper/snap "$TMP/p2" 300 20
	patch_file "$TMP/want-origin" "$TMP/p1" 0 60
	patch_file "$TMP/want-snap" "$TMP/p2" 300 20
	check_views "C, written"
	snapshot_status snap > "$TMP/status-c"
	down
}
in_store c a_c_writes
"$TOOLS/snap_dump" /dev/ram1 > "$TMP/dump-c"
note "C status: $(cat "$TMP/status-c")"
expect_eq "exceptions in the dump of C's COW" 80 "$(exceptions "$TMP/dump-c")"

note "(a) ours loads them and adds 15"
a_ours_reads_and_writes() {
	dm_remove_all_on_exit
	up
	expect_eq "ours: status of C's COW" "$(cat "$TMP/status-c")" "$(snapshot_status snap)"
	check_views "ours, loaded"
	dmsetup remove snap
	"$TOOLS/snap_dump" /dev/ram1 > "$TMP/dump-c-after-ours"
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 1)"
	dmsetup suspend base
	dmsetup resume base
	check_views "ours, reloaded"
	# 10 new origin chunks, 4 origin chunks that have exceptions already,
	# 5 new snapshot chunks, 1 snapshot chunk that has an exception
	write_sectors /dev/mapper/base "$TMP/p3" 500 10
	write_sectors /dev/mapper/base "$TMP/p4" 0 4
	write_sectors /dev/mapper/snap "$TMP/p4" 600 5
	write_sectors /dev/mapper/snap "$TMP/p5" 300 1
	patch_file "$TMP/want-origin" "$TMP/p3" 500 10
	patch_file "$TMP/want-origin" "$TMP/p4" 0 4
	patch_file "$TMP/want-snap" "$TMP/p4" 600 5
	patch_file "$TMP/want-snap" "$TMP/p5" 300 1
	check_views "ours, written"
	snapshot_status snap > "$TMP/status-ours"
	down
}
in_store ours a_ours_reads_and_writes
cmp -s "$TMP/dump-c" "$TMP/dump-c-after-ours" ||
	fail "snap_dump of C's COW changed after our store loaded it: $(diff "$TMP/dump-c" "$TMP/dump-c-after-ours" | head -n5)"
"$TOOLS/snap_dump" /dev/ram1 > "$TMP/dump-ours"
note "ours status: $(cat "$TMP/status-ours")"
expect_eq "exceptions in the dump of our COW" 95 "$(exceptions "$TMP/dump-ours")"
# ours appended: C's 80 records are still first, in order
cmp -s <(head -n 81 "$TMP/dump-c") <(head -n 81 "$TMP/dump-ours") || fail "our store changed C's records"
"$TOOLS/snap_check" /dev/ram1 > "$TMP/check-ours" || fail "snap_check of our COW: $(cat "$TMP/check-ours")"

note "(a) C loads all 95 and adds 2"
a_c_reads_again() {
	dm_remove_all_on_exit
	up
	expect_eq "C: status of our COW" "$(cat "$TMP/status-ours")" "$(snapshot_status snap)"
	check_views "C, loaded"
	write_sectors /dev/mapper/base "$TMP/p5" 700 2
	patch_file "$TMP/want-origin" "$TMP/p5" 700 2
	check_views "C, written"
	snapshot_status snap > "$TMP/status-c2"
	down
}
in_store c a_c_reads_again
"$TOOLS/snap_dump" /dev/ram1 > "$TMP/dump-c2"
cmp -s <(head -n 96 "$TMP/dump-ours") <(head -n 96 "$TMP/dump-c2") || fail "the C store changed our records"
expect_eq "exceptions after C's writes" 97 "$(exceptions "$TMP/dump-c2")"
reload_views() {
	dm_remove_all_on_exit
	up
	echo "$(snapshot_status snap)"
	check_views "$1 reload of 97"
	down
}
expect_eq "ours reloads C's last writes" "$(cat "$TMP/status-c2")" "$(in_store ours reload_views ours)"
expect_eq "C reloads C's last writes" "$(cat "$TMP/status-c2")" "$(in_store c reload_views C)"
note "(a) done: $(cat "$TMP/status-c2")"

note "(b) merge by one store, load by the other"
# merge COW: merge the snapshot on COW into ram0, leave an empty store
merge_cow() {
	dm_remove_all_on_exit
	up "$1"
	local want
	want=$(cow_sum /dev/mapper/snap)
	dmsetup remove snap
	echo "merged: $(merge_into_origin base /dev/ram0 "$1" 1)" >&2
	expect_eq "origin after merge" "$want" "$(cow_sum /dev/mapper/base)"
	dmsetup remove base
}
# load_merged COW: the store on COW is empty
load_merged() {
	dm_remove_all_on_exit
	up "$1"
	expect_eq "status of the merged COW $1" "2/2048 2" "$(snapshot_status snap)"
	expect_eq "snapshot of the merged COW $1" "$(cow_sum /dev/ram0)" "$(cow_sum /dev/mapper/snap)"
	down
}
make_exceptions() {
	dm_remove_all_on_exit
	up "$1"
	write_sectors /dev/mapper/base "$TMP/p1" 40 45
	write_sectors /dev/mapper/snap "$TMP/p2" 1000 10
	snapshot_status snap >&2
	down
}
in_store c merge_cow /dev/ram1
in_store ours load_merged /dev/ram1
"$TOOLS/snap_dump" /dev/ram1 > "$TMP/dump-merged-by-c"
expect_eq "exceptions in C's merged COW" 0 "$(exceptions "$TMP/dump-merged-by-c")"
in_store ours make_exceptions /dev/ram2
in_store ours merge_cow /dev/ram2
in_store c load_merged /dev/ram2
"$TOOLS/snap_dump" /dev/ram2 > "$TMP/dump-merged-by-ours"
expect_eq "exceptions in our merged COW" 0 "$(exceptions "$TMP/dump-merged-by-ours")"

note "(c) invalidate by one store, load by the other"
# A 40-sector COW on ram3: 37 data chunks.
invalidate() {
	dm_remove_all_on_exit
	slice scow /dev/ram3 0 40
	up /dev/mapper/scow
	write_sectors /dev/mapper/base "$TMP/p1" 0 50
	expect_eq "status after overflow" "Invalid" "$(snapshot_status snap)"
	down
	dd if=/dev/mapper/scow bs=512 count=1 status=none > "$TMP/header-$1"
	"$TOOLS/snap_dump" /dev/mapper/scow > "$TMP/dump-invalid-$1"
}
load_invalid() {
	dm_remove_all_on_exit
	slice scow /dev/ram3 0 40
	up /dev/mapper/scow
	expect_eq "status of a COW invalidated by $1" "Invalid" "$(snapshot_status snap)"
	expect_fail "reading an invalid snapshot" dd if=/dev/mapper/snap of=/dev/null bs=512 count=1 iflag=direct status=none
	down
}
in_store ours invalidate ours
in_store c load_invalid ours
dd if=/dev/zero of=/dev/ram3 bs=512 count=40 oflag=direct status=none
in_store c invalidate c
in_store ours load_invalid c
cmp "$TMP/header-c" "$TMP/header-ours" || fail "the header chunks of an invalidated COW differ (C: $(od -An -tx4 -N16 "$TMP/header-c"), ours: $(od -An -tx4 -N16 "$TMP/header-ours"))"
cmp "$TMP/dump-invalid-c" "$TMP/dump-invalid-ours" || fail "the dumps of an invalidated COW differ"
grep -q 'valid="0"' "$TMP/dump-invalid-c" || fail "dump of an invalidated COW: $(head -n1 "$TMP/dump-invalid-c")"
expect_eq "exceptions in an invalidated COW" 0 "$(exceptions "$TMP/dump-invalid-c")"
note "invalidated header: $(od -An -tx4 -N16 "$TMP/header-c")"
expect_dmesg "Snapshot is marked invalid"
