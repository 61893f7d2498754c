#!/usr/bin/env bash
# Records after the end marker of the last area are garbage (C ignores them).
# If they stay on disk, a later commit that writes the end of that area torn
# (only its first blocks reach the disk) brings them back as exceptions, and
# by then their chunks may hold other data. Our store clears them on disk
# when it activates the COW device, before any chunk can be reused.
#
# COW of 512-byte chunks: area 0 at chunk 1 holds "old 0 -> new 2", the end
# marker, then a stray record "old 3 -> new 3" at index 5. After a table
# load, record 5 on disk must be zero for our store (and the kernel log names
# the garbage); the C store's disk is printed for information.
# timeout: 180
# cost: 15
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/failure-lib.sh"

make_pattern "$TMP/orig" 64


observe() {
	make_ram_disks 2 64
	dm_remove_all_on_exit
	write_at /dev/ram0 "$TMP/orig" 0
	write_header /dev/ram1 "$SNAP_MAGIC" 1 1 1
	write_exception /dev/ram1 1 1 0 0 2
	write_exception /dev/ram1 1 1 5 3 3
	# chunk 2 holds the snapshot's copy of origin chunk 0
	dd if="$TMP/orig" of=/dev/ram1 bs=512 count=1 seek=2 conv=notrunc oflag=direct status=none
	kmsg_mark
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 1)"
	echo "status: $(snapshot_status snap)"
	dm_msgs | { grep 'persistent snapshot' || true; } | sed 's/^/log: /'
	echo "record 5 on disk: $(dd if=/dev/ram1 bs=512 skip=1 count=1 iflag=direct status=none | od -A n -t u8 -j 80 -N 16 | tr -s ' ' | sed 's/^ //')"
	echo "record 0 on disk: $(dd if=/dev/ram1 bs=512 skip=1 count=1 iflag=direct status=none | od -A n -t u8 -N 16 | tr -s ' ' | sed 's/^ //')"
	cmp -s <(read_at /dev/mapper/snap 0 64) "$TMP/orig" && echo "snapshot shows the origin" || echo "snapshot differs"
	dmsetup remove snap
}

note "for information, the C store:"
in_store c observe | tee "$TMP/c.out"
note "our store:"
in_store ours observe | tee "$TMP/ours.out"
expect_line "$TMP/ours.out" "record 5 on disk: 0 0" "our store left the stray record on disk"
expect_line "$TMP/ours.out" "record 0 on disk: 0 2" "our store lost the real exception"
expect_line "$TMP/ours.out" "snapshot shows the origin" "our snapshot does not show the origin"
expect_text "$TMP/ours.out" "log: device-mapper: persistent snapshot: " "our store did not log the garbage"
