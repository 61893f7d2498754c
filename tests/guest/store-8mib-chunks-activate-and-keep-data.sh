#!/usr/bin/env bash
# Large chunks: with 8 MiB chunks an area holds 524,288 exceptions, and the
# store's array of waiting commit completions is as large. It must come
# from memory that falls back to vmalloc (C uses kvcalloc): a kmalloc of
# that size can never succeed, and at 64-512 KiB chunks it needs order-4 to
# order-7 pages that a fragmented machine may refuse.
# On a 48 MiB COW: create a snapshot with 8 MiB chunks, write into two
# origin chunks, reload the snapshot from its COW device; the snapshot keeps
# the old data and reports the usage the layout gives.
# Our store only: dm-bufio allocates blocks over KMALLOC_MAX_SIZE (4 MiB)
# with __vmalloc and __GFP_NOMEMALLOC, which Linux 7.3's vmalloc warns
# about ("Unexpected gfp ... Fix your code!"), so the C store, which reads
# its areas through dm-bufio, cannot activate such a COW without a kernel
# warning. Ours reads areas of such chunks with dm-io.
# timeout: 300
# cost: 13
. "$DMSNAP_HARNESS/lib.sh"

make_pattern "$TMP/orig" 4096
make_pattern "$TMP/new" 64

observe() {
	make_ram_disks 2 49152
	dm_remove_all_on_exit
	dd if="$TMP/orig" of=/dev/ram0 bs=1M oflag=direct status=none
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 16384)"
	dmsetup create base --table "$(origin_table /dev/ram0)"
	echo "fresh: $(snapshot_status snap)"
	write_at /dev/mapper/base "$TMP/new" 0
	write_at /dev/mapper/base "$TMP/new" 9000
	echo "after two writes: $(snapshot_status snap)"
	dmsetup remove snap
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 16384)"
	echo "reloaded: $(snapshot_status snap)"
	cmp -s <(read_at /dev/mapper/snap 0 4096) "$TMP/orig" && echo "snapshot keeps the old data" || echo "snapshot differs"
	dmsetup remove snap base
	echo "cow checksum: $(cow_sum /dev/ram1)"
}
in_store ours observe > "$TMP/ours.out" || { cat "$TMP/ours.out"; fail "our store failed"; }
cat "$TMP/ours.out"
expect_eq "fresh status" "fresh: 32768/98304 32768" "$(sed -n 1p "$TMP/ours.out")"
expect_line "$TMP/ours.out" "after two writes: 65536/98304 32768" "usage after two exceptions"
expect_line "$TMP/ours.out" "reloaded: 65536/98304 32768" "usage after the reload"
expect_line "$TMP/ours.out" "snapshot keeps the old data" "our snapshot lost the old data"
