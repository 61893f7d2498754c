#!/usr/bin/env bash
# Records after the end marker of the last area are garbage (C ignores them).
# If they stay on disk, a later commit that writes the end of that area torn
# (the block with its record durable, a later block not) brings them back as
# exceptions, and by then their chunks may hold other data. Our store leaves
# the COW device alone at activation (it may be read-only) and clears them
# on disk at the first commit, before that commit's record is written.
#
# COW of 4 KiB chunks: area 0 at chunk 1 holds "old 0 -> new 2", the end
# marker, then a stray record "old 3 -> new 3" at index 40 (the area's
# second sector). After the table load the COW device is unchanged; after
# one origin write (chunk 4), record 40 is zero, record 0 is kept and record
# 1 is the new exception, "old 4 -> new 3": the chunk the stray record named.
# The C store's disk is printed for information.
# timeout: 180
# cost: 15
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/failure-lib.sh"

make_pattern "$TMP/orig" 64
make_pattern "$TMP/new" 4

record() {
	# record DEV INDEX: old and new chunk of record INDEX of area 0.
	dd if="$1" bs=4096 skip=1 count=1 iflag=direct status=none | od -A n -t u8 -j $(($2 * 16)) -N 16 | tr -s ' ' | sed 's/^ //'
}

observe() {
	make_ram_disks 2 64
	dm_remove_all_on_exit
	write_at /dev/ram0 "$TMP/orig" 0
	write_header /dev/ram1 "$SNAP_MAGIC" 1 1 8
	write_exception /dev/ram1 8 1 0 0 2
	write_exception /dev/ram1 8 1 40 3 3
	# chunk 2 holds the snapshot's copy of origin chunk 0
	dd if="$TMP/orig" of=/dev/ram1 bs=4096 count=1 seek=2 conv=notrunc oflag=direct status=none
	before=$(cow_sum /dev/ram1)
	kmsg_mark
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 8)"
	dmsetup create orig --table "$(origin_table /dev/ram0)"
	echo "status: $(snapshot_status snap)"
	dm_msgs | { grep 'persistent snapshot' || true; } | sed 's/^/log: /'
	[ "$(cow_sum /dev/ram1)" = "$before" ] && echo "activation left the COW unchanged" || echo "activation wrote the COW"
	echo "record 40 after activation: $(record /dev/ram1 40)"
	# One origin write of chunk 4: its exception is committed.
	write_at /dev/mapper/orig "$TMP/new" 16
	echo "record 40 after a commit: $(record /dev/ram1 40)"
	echo "record 0 after a commit: $(record /dev/ram1 0)"
	echo "record 1 after a commit: $(record /dev/ram1 1)"
	cmp -s <(read_at /dev/mapper/snap 0 64) "$TMP/orig" && echo "snapshot shows the origin" || echo "snapshot differs"
	dmsetup remove orig
	dmsetup remove snap
}

note "for information, the C store:"
in_store c observe | tee "$TMP/c.out"
note "our store:"
in_store ours observe | tee "$TMP/ours.out"
expect_line "$TMP/ours.out" "activation left the COW unchanged" "our store wrote the COW device at activation"
expect_line "$TMP/ours.out" "record 40 after activation: 3 3" "our store cleared the stray record at activation"
expect_line "$TMP/ours.out" "record 40 after a commit: 0 0" "our store left the stray record on disk after a commit"
expect_line "$TMP/ours.out" "record 0 after a commit: 0 2" "our store lost the real exception"
expect_line "$TMP/ours.out" "record 1 after a commit: 4 3" "our store did not commit the origin write's exception"
expect_line "$TMP/ours.out" "snapshot shows the origin" "our snapshot does not show the origin"
expect_text "$TMP/ours.out" "log: device-mapper: persistent snapshot: " "our store did not log the garbage"
