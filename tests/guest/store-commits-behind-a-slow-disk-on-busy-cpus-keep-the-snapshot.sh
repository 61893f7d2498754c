#!/usr/bin/env bash
# Commit writes that complete out of the submitter's sight: the origin and
# the COW device sit behind a 1 ms dm-delay, and two busy loops per CPU
# keep the CPUs taken, so a commit write sometimes completes (on another
# CPU, or while its submitter is preempted) before dm-io returns, and the
# next write is issued while the completions of the last are being
# called. Each round writes 1000 chunks of the origin in order at queue
# depth 16 (4 KiB chunks: the records fill three areas and go on into a
# fourth), then the snapshot must be valid and read as the origin did
# before, and so must the COW device activated again, with the usage C's
# reports. Both stores, six rounds each. A completion lost or failed by
# the store makes dm-snapshot invalidate the snapshot.
# timeout: 1200
# cost: 450
. "$DMSNAP_HARNESS/lib.sh"

command -v fio > /dev/null || skip "no fio"
ROUNDS=6
FILL=1000
make_pattern "$TMP/before" $((FILL * 4))

# same_as_before WHAT DEV: DEV starts with $TMP/before (one read: every I/O
# waits for the delay).
same_as_before() {
	cmp -s <(dd if="$2" bs=$((FILL * 4))K count=1 iflag=direct status=none) "$TMP/before" ||
		fail "$1: $2 differs from the origin as it was"
}

round() {
	local r=$1 st
	dmsetup create bo --table "0 $(sectors /dev/ram0) delay /dev/ram0 0 1"
	dmsetup create bc --table "0 $(sectors /dev/ram1) delay /dev/ram1 0 1"
	dd if="$TMP/before" of=/dev/mapper/bo bs=$((FILL * 4))K oflag=direct status=none
	# a new store each round, over the last round's areas
	dd if=/dev/zero of=/dev/mapper/bc bs=4K count=1 oflag=direct status=none
	dmsetup create ss --table "$(snapshot_table /dev/mapper/bo /dev/mapper/bc P 8)"
	dmsetup create so --table "$(origin_table /dev/mapper/bo)"
	fio --name=fill --filename=/dev/mapper/so --rw=write --bs=4k --direct=1 --ioengine=libaio \
		--iodepth=16 --size=$((FILL * 4))k --minimal > /dev/null || fail "round $r: fio failed"
	st=$(snapshot_status ss)
	case "$st" in
	*/*) ;;
	*) fail "round $r: the snapshot is '$st' after $FILL origin writes" ;;
	esac
	same_as_before "round $r: the snapshot" /dev/mapper/ss
	dmsetup remove ss
	dmsetup create again --table "$(snapshot_table /dev/mapper/bo /dev/mapper/bc P 8)"
	same_as_before "round $r: the snapshot activated again" /dev/mapper/again
	echo "round $r: $(snapshot_status again | cut -d' ' -f1)"
	dmsetup remove again so bc bo
}

observe() {
	local r h hogs=()
	make_ram_disks 2 $((64 * 1024))
	dm_remove_all_on_exit
	for ((h = 0; h < 2 * $(nproc); h++)); do
		(while :; do :; done) &
		hogs+=($!)
	done
	on_exit "kill ${hogs[*]}"
	for ((r = 1; r <= ROUNDS; r++)); do round "$r"; done
}
same_on_both_stores observe
