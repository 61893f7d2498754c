#!/usr/bin/env bash
# A COW device reduced below what its exceptions use (an lvreduce of a
# snapshot volume) is refused by our store (C loads it and fails the I/O
# that reaches past the end), and the refusal says how large the device
# must be, so that extending it back is the way out; snap_check says the
# same. 512-byte chunks, 80 exceptions: area 0 (chunk 1) and area 1 (chunk
# 34) full, area 2 (chunk 67) with 16, the last one at chunk 83.
#   cut to 80 sectors: area 2 is read, its last records are past the end:
#     "it must have 84 sectors or more to load"
#   cut to 60 sectors: area 1 is full and past the end, area 2 unreadable:
#     "it must have at least 68 sectors to load"
#   extended back to 84 sectors: it loads and the snapshot is intact.
# timeout: 240
# cost: 30
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/failure-lib.sh"
. "$DMSNAP_HARNESS/compat-lib.sh"

TOOLS=$(snap_tools)
use_store ours
make_ram_disks 2 128
dm_remove_all_on_exit
make_pattern "$TMP/orig" 128
make_pattern "$TMP/new" 40
write_at /dev/ram0 "$TMP/orig" 0

# 80 exceptions: 40 KiB of origin writes through the origin device.
dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 1)"
dmsetup create orig --table "$(origin_table /dev/ram0)"
write_at /dev/mapper/orig "$TMP/new" 0
expect_eq "usage" "$(snapshot_status snap)" "84/256 4"
dmsetup remove orig
dmsetup remove snap

# cut SECTORS: the COW device as a linear slice of that size; load it.
cut() {
	slice cow /dev/ram1 0 "$1"
	kmsg_mark
	echo "load on $1 sectors: $(try_create snap "$(snapshot_table /dev/ram0 /dev/mapper/cow P 1)")"
	dm_msgs | { grep 'persistent snapshot' || true; } | sed 's/^/log: /'
	{ "$TOOLS/snap_check" /dev/mapper/cow || true; } | { grep "^module:" || true; } | sed "s/^/check: /"
}

cut 80 | tee "$TMP/80.out"
expect_line "$TMP/80.out" "load on 80 sectors: refused" "a COW cut below its exceptions loaded"
expect_line "$TMP/80.out" "log: device-mapper: persistent snapshot: COW device of 80 sectors is too small for its exceptions: it must have 84 sectors or more to load" "the refusal does not say the size needed"
expect_text "$TMP/80.out" "check: module: would refuse the device: " "snap_check does not refuse"
expect_text "$TMP/80.out" "(80 chunks); COW device of 80 sectors is too small for its exceptions: it must have 84 sectors or more to load" "snap_check does not say the same"
dmsetup remove cow

cut 60 | tee "$TMP/60.out"
expect_line "$TMP/60.out" "load on 60 sectors: refused" "a COW cut below its exceptions loaded"
expect_text "$TMP/60.out" "log: device-mapper: persistent snapshot: COW device of 60 sectors is too small for its exceptions: it must have at least 68 sectors to load" "the refusal does not say the size needed"
expect_text "$TMP/60.out" "check: module: would refuse the device: " "snap_check does not refuse"
expect_text "$TMP/60.out" "; COW device of 60 sectors is too small for its exceptions: it must have at least 68 sectors to load" "snap_check does not say the same"
dmsetup remove cow

cut 84 | tee "$TMP/84.out"
expect_line "$TMP/84.out" "load on 84 sectors: created" "the COW extended back does not load"
cmp -s <(read_at /dev/mapper/snap 0 128) "$TMP/orig" || fail "the snapshot extended back does not show the old origin"
dmsetup remove snap
dmsetup remove cow
