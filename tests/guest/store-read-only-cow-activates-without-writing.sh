#!/usr/bin/env bash
# A valid store on a COW device that cannot or must not be written loads
# and serves snapshot reads, and activation leaves its bytes alone, as the
# C store does: nothing at activation writes a valid store, not even the
# garbage after the end marker our store clears (that waits for the first
# commit). Two read-only devices, each with both stores:
#   - a loop device attached with `losetup -r` (its writes fail with EIO);
#   - a ram disk after `blockdev --setro` (writes still reach it, with a
#     kernel warning, so a write would change the image).
# The image: 4 KiB chunks, area 0 holding "old 0 -> new 2" and a stray
# record after the end marker (index 40, the area's second sector); chunk 2
# holds the origin's chunk 0.
# timeout: 240
# cost: 25
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/failure-lib.sh"

make_pattern "$TMP/orig" 64
make_pattern "$TMP/other" 4
modprobe loop

# make_image DEV: the store described above on DEV (64 KiB).
make_image() {
	write_header "$1" "$SNAP_MAGIC" 1 1 8
	write_exception "$1" 8 1 0 0 2
	write_exception "$1" 8 1 40 3 3
	dd if="$TMP/orig" of="$1" bs=4096 count=1 seek=2 conv=notrunc oflag=direct status=none
}

# observe KIND: load a snapshot of /dev/ram0 on a read-only COW device of
# KIND (loop-ro or setro) and report what happened.
observe() {
	local cow before
	make_ram_disks 2 64
	dm_remove_all_on_exit
	write_at /dev/ram0 "$TMP/orig" 0
	case "$1" in
	loop-ro)
		mkdir -p "$TMP/fs" && mount -t tmpfs -o size=4m tmpfs "$TMP/fs"
		on_exit "umount $TMP/fs"
		truncate -s 64K "$TMP/fs/cow.img"
		cow=$(losetup -f --show "$TMP/fs/cow.img")
		make_image "$cow"
		losetup -d "$cow"
		cow=$(losetup -r -f --show "$TMP/fs/cow.img")
		on_exit "losetup -d $cow"
		;;
	setro)
		cow=/dev/ram1
		make_image "$cow"
		blockdev --setro "$cow"
		on_exit "blockdev --setrw $cow"
		;;
	esac
	echo "$1: read-only: $(blockdev --getro "$cow")"
	before=$(cow_sum "$cow")
	echo "$1: load: $(try_create snap "$(snapshot_table /dev/ram0 "$cow" P 8)")"
	if [ -e /dev/mapper/snap ]; then
		echo "$1: status: $(snapshot_status snap)"
		cmp -s <(read_at /dev/mapper/snap 0 64) "$TMP/orig" && echo "$1: snapshot reads the origin's data" || echo "$1: snapshot reads differ"
		# The origin changes under the snapshot (not through dm): the
		# snapshot's chunk 0 must still come from the COW device.
		write_at /dev/ram0 "$TMP/other" 0
		cmp -s <(read_at /dev/mapper/snap 0 4) <(head -c 4096 "$TMP/orig") \
			&& echo "$1: chunk 0 comes from the COW device" || echo "$1: chunk 0 does not come from the COW device"
		dmsetup remove snap
	fi
	[ "$(cow_sum "$cow")" = "$before" ] && echo "$1: COW device unchanged" || echo "$1: COW device written"
}

for kind in loop-ro setro; do
	same_on_both_stores observe "$kind"
	cat "$TMP/ours.out" >> "$TMP/all.out"
done
for kind in loop-ro setro; do
	expect_line "$TMP/all.out" "$kind: load: created" "$kind: our store refused the table"
	expect_line "$TMP/all.out" "$kind: snapshot reads the origin's data" "$kind: our snapshot's reads are wrong"
	expect_line "$TMP/all.out" "$kind: chunk 0 comes from the COW device" "$kind: our snapshot lost its exception"
	expect_line "$TMP/all.out" "$kind: COW device unchanged" "$kind: our store wrote the read-only COW device"
done
