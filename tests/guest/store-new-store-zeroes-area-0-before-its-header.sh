#!/usr/bin/env bash
# A new store must make area 0 empty on disk before a valid header can reach
# the disk: otherwise a crash (or an error) between the two leaves a valid
# header over stale records, which the next activation reads as exceptions.
#
# The COW device (4 KiB chunks) holds stale metadata from an earlier life:
# a zero header, and in area 0 (chunk 1) a record "old 0 -> new 2" whose
# chunk 2 holds junk. The first table load sees area 0 through an `error`
# target, so zeroing it fails; then the COW is mapped whole again and the
# table loaded once more. Our store zeroes area 0 first, so the failed load
# wrote no header and the second load starts a new, empty store: the
# snapshot shows the origin. The C store writes the header first; what it
# shows is printed for information, not asserted.
# timeout: 240
# cost: 20
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/failure-lib.sh"

make_pattern "$TMP/orig" 64
make_pattern "$TMP/junk" 4

observe() {
	local cow_sectors
	make_ram_disks 2 256
	dm_remove_all_on_exit
	write_at /dev/ram0 "$TMP/orig" 0
	dd if=/dev/zero of=/dev/ram1 bs=1024 count=256 oflag=direct status=none
	write_exception /dev/ram1 8 1 0 0 2
	write_at /dev/ram1 "$TMP/junk" 8
	cow_sectors=$(sectors /dev/ram1)
	# chunk 0 and chunks 2.. of ram1; chunk 1 (area 0) fails every I/O
	dmsetup create cow --table "0 8 linear /dev/ram1 0
8 8 error
16 $((cow_sectors - 16)) linear /dev/ram1 16"
	kmsg_mark
	echo "first load: $(try_create snap "$(snapshot_table /dev/ram0 /dev/mapper/cow P 8)")"
	dm_msgs | { grep 'persistent snapshot' || true; } | sed 's/^/first load log: /'
	[ -e /dev/mapper/snap ] && dmsetup remove snap
	echo "header after the failed load: $(header_fields /dev/ram1)"
	dmsetup remove cow
	dmsetup create cow --table "0 $cow_sectors linear /dev/ram1 0"
	echo "second load: $(try_create snap "$(snapshot_table /dev/ram0 /dev/mapper/cow P 8)")"
	if [ -e /dev/mapper/snap ]; then
		echo "second load status: $(snapshot_status snap)"
		if cmp -s <(read_at /dev/mapper/snap 0 64) "$TMP/orig"; then
			echo "snapshot shows the origin"
		elif cmp -s <(read_at /dev/mapper/snap 0 4) "$TMP/junk"; then
			echo "snapshot shows the stale chunk"
		else
			echo "snapshot shows something else"
		fi
		dmsetup remove snap
	fi
	dmsetup remove cow
}

note "for information, the C store:"
in_store c observe | tee "$TMP/c.out"
note "our store:"
in_store ours observe | tee "$TMP/ours.out"
expect_line "$TMP/ours.out" "first load: refused" "our first load did not fail"
expect_line "$TMP/ours.out" "first load log: device-mapper: persistent snapshot: zero_disk_area(0) failed" \
	"our store did not log the failed zeroing"
expect_line "$TMP/ours.out" "header after the failed load: 0 0 0 0" \
	"our store wrote a header although area 0 was not zeroed"
expect_line "$TMP/ours.out" "second load: created" "our second load failed"
expect_line "$TMP/ours.out" "second load status: 16/512 16" "our second load is not a new, empty store"
expect_line "$TMP/ours.out" "snapshot shows the origin" "our snapshot does not show the origin"
