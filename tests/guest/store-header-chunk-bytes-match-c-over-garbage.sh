#!/usr/bin/env bash
# Chunk 0 (the header chunk) and area 0 of a COW device hold the same bytes
# whichever store wrote them, over a device full of garbage (but for a zero
# first sector: no store yet) and with chunks
# larger than a page (64 KiB): C writes its header from a chunk-sized
# buffer and zeroes area 0 from a chunk of zeros, ours from one page
# followed by a zero page. Checked for a new store (header and area 0), and
# after an overflow invalidates it (the header rewritten with valid = 0).
# The COW device is 4 chunks: header, area 0 and two data chunks, so the
# third chunk written to the origin overflows it.
# timeout: 240
# cost: 20
. "$DMSNAP_HARNESS/lib.sh"

CHUNK_KIB=64
make_pattern "$TMP/garbage" $((4 * CHUNK_KIB))
make_pattern "$TMP/orig" $((8 * CHUNK_KIB))

# chunk_sums DEV: the checksums of chunks 0 and 1 of DEV.
chunk_sums() {
	echo "chunk 0 $(read_at "$1" 0 "$CHUNK_KIB" | md5sum | cut -d' ' -f1)," \
		"chunk 1 $(read_at "$1" "$CHUNK_KIB" "$CHUNK_KIB" | md5sum | cut -d' ' -f1)"
}

observe() {
	make_ram_disks 2 $((8 * CHUNK_KIB))
	dm_remove_all_on_exit
	write_at /dev/ram0 "$TMP/orig" 0
	write_at /dev/ram1 "$TMP/garbage" 0
	# A zero magic: no store yet (the rest of chunk 0 stays garbage).
	dd if=/dev/zero of=/dev/ram1 bs=512 count=1 oflag=direct conv=notrunc status=none
	slice cow /dev/ram1 0 $((4 * CHUNK_KIB * 2))
	dmsetup create base --table "$(origin_table /dev/ram0)"
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/mapper/cow P $((CHUNK_KIB * 2)))"
	echo "new store: $(snapshot_status snap); $(chunk_sums /dev/mapper/cow)"
	local i
	for i in 0 1 2; do
		dd if=/dev/zero of=/dev/mapper/base bs=1K count=4 seek=$((i * CHUNK_KIB)) oflag=direct status=none
	done
	echo "after the overflow: $(snapshot_status snap); $(chunk_sums /dev/mapper/cow)"
	dmsetup remove snap base cow
}
same_on_both_stores observe
