#!/usr/bin/env bash
# dm-snapshot's own waits meet the store's commits while writes are in
# flight: random origin writes at queue depth 16 run while the snapshot is
# suspended and resumed, and reloaded with the same table (dm-snapshot then
# hands the store over to the new table's snapshot at resume); the
# snapshot is removed as soon as the writes end, which destroys the store
# right after its last commits. Then the COW device is activated again and
# must hold the origin as it was before the writes, block for block. Both
# stores, three rounds each; a hang fails the test by its timeout, and a
# kernel warning by the harness.
# timeout: 900
# cost: 120
. "$DMSNAP_HARNESS/lib.sh"

command -v fio > /dev/null || skip "no fio"
MIB=32
make_pattern "$TMP/before" $((MIB * 1024))

round() {
	local r=$1 fio_pid i
	make_ram_disks 2 $((MIB * 1024))
	dm_remove_all_on_exit
	write_at /dev/ram0 "$TMP/before" 0
	dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 8)"
	dmsetup create base --table "$(origin_table /dev/ram0)"
	fio --name=w --filename=/dev/mapper/base --rw=randwrite --bs=4k --direct=1 \
		--ioengine=libaio --iodepth=16 --number_ios=3000 --size=${MIB}m \
		--randseed=$((r + 1)) --norandommap > "$TMP/fio.log" 2>&1 &
	fio_pid=$!
	i=0
	while kill -0 "$fio_pid" 2> /dev/null; do
		dmsetup suspend snap
		dmsetup resume snap
		dmsetup reload snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 8)"
		dmsetup resume snap
		i=$((i + 1))
	done
	wait "$fio_pid" || { cat "$TMP/fio.log"; fail "fio failed"; }
	# Destroy the store right after its last commits.
	dmsetup remove snap
	[ "$i" -gt 0 ] || fail "round $r: the writes ended before any reload"
	dmsetup create again --table "$(snapshot_table /dev/ram0 /dev/ram1 P 8)"
	same_data "round $r: the snapshot holds the origin as it was" /dev/mapper/again 0 "$TMP/before"
	echo "round $r: snapshot intact, $(snapshot_status again | cut -d/ -f1 | tr -d ' ') sectors allocated"
	dmsetup remove again base
	echo "--- round $r: $i suspend/reload cycles during the writes" >&2
}

observe() {
	local r
	for r in 1 2 3; do round "$r"; done
}
same_on_both_stores observe
