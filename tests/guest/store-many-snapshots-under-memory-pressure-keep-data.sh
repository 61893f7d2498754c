#!/usr/bin/env bash
# Many snapshots of one origin, concurrent I/O and control operations, and
# memory pressure: both stores, the same steps and checks.
#   - ext4 on the origin (snapshot-origin over a RAM disk); six snapshots of
#     mixed chunk sizes (4, 8, 16, 64, 4 and 32 KiB; the fifth PO), each
#     created with the origin suspended (as lvm2 does) at a different moment,
#     with files written through the page cache between; the origin's bytes
#     saved at each creation.
#   - Then, with a tmpfs hog leaving about LEFT_MIB of memory available (so
#     that writeback goes through dm-snapshot under reclaim): files written
#     to the origin's ext4, O_DIRECT writes to two snapshots (recorded in
#     their expected images), and loops running `dmsetup status`, `dmsetup
#     table`, and suspend/resume of a snapshot and of the origin.
#   - Then every snapshot is reloaded from its COW device and compared block
#     by block with its expected image; the origin's ext4 passes fsck and
#     its files their checksums; the first snapshot is merged into the origin
#     while the others stay, and the origin and the others are compared.
#   - A self-check: a comparison against an image with one byte changed
#     must report one mismatched block.
# timeout: 1500
# cost: 300
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/compat-lib.sh"

MIB=24                      # each RAM disk
LEFT_MIB=${DMSNAP_MANY_LEFT_MIB:-160}
CHUNKS=(8 16 32 128 8 64)   # sectors, snapshots 1..6
TYPES=(P P P P PO P)
WRITABLE="2 5"              # snapshots written to
ROUNDS=${DMSNAP_MANY_ROUNDS:-40}

# blocks_differing A B: 4 KiB blocks in which files A and B differ.
blocks_differing() {
	cmp -l "$1" "$2" 2>/dev/null | awk '{ b = int(($1 - 1) / 4096); if (!(b in seen)) { seen[b] = 1; n++ } } END { print n + 0 }'
}

# compare WHAT DEV EXPECTED: prints "WHAT: N mismatched blocks".
compare() {
	dd if="$2" of="$TMP/actual" bs=1M iflag=direct status=none
	echo "$1: $(blocks_differing "$TMP/actual" "$3") mismatched blocks"
}

# fs_write TAG N: N files of 4 to 64 KiB of random data in the origin's
# ext4, and an overwrite inside an earlier file, through the page cache;
# their checksums recorded.
fs_write() {
	local i f kib
	for ((i = 0; i < $2; i++)); do
		f=$TMP/mnt/$1-$i
		kib=$((4 * (1 + RANDOM % 16)))
		head -c $((kib * 1024)) /dev/urandom > "$f"
		md5sum "$f" >> "$TMP/sums"
	done
}

# snap_write K N: N O_DIRECT 4 KiB writes at random offsets to snapshot K,
# patched into its expected image.
snap_write() {
	local i off
	for ((i = 0; i < $2; i++)); do
		off=$((RANDOM % (MIB * 256)))
		head -c 4096 /dev/urandom > "$TMP/blk-$1"
		dd if="$TMP/blk-$1" of=/dev/mapper/s$1 bs=4096 seek=$off oflag=direct conv=notrunc status=none || return 1
		dd if="$TMP/blk-$1" of="$TMP/exp-$1" bs=4096 seek=$off conv=notrunc status=none
	done
}

# create_snapshot K: snapshot K of the origin, made with the origin
# suspended; the origin's bytes at that moment saved as its expected image.
create_snapshot() {
	local k=$1 i=$(($1 - 1))
	dmsetup suspend origin
	dmsetup create "s$k" --table "0 $(sectors /dev/ram0) snapshot /dev/ram0 /dev/ram$k ${TYPES[$i]} ${CHUNKS[$i]}"
	dd if=/dev/ram0 of="$TMP/exp-$k" bs=1M iflag=direct status=none
	dmsetup resume origin
}

control_loops() {
	while [ ! -e "$TMP/stop" ]; do
		dmsetup status > /dev/null
		dmsetup table > /dev/null
	done &
	echo $! > "$TMP/loop1.pid"
	while [ ! -e "$TMP/stop" ]; do
		dmsetup suspend s3 && dmsetup resume s3
		dmsetup suspend origin && dmsetup resume origin
		sleep 0.2
	done &
	echo $! > "$TMP/loop2.pid"
}

scenario() {
	local k st kib
	make_ram_disks 7 $((MIB * 1024))
	dm_remove_all_on_exit
	dmsetup create origin --table "$(origin_table /dev/ram0)"
	mkfs.ext4 -q -F -b 4096 -J size=4 /dev/mapper/origin
	mkdir -p "$TMP/mnt"
	mount -t ext4 /dev/mapper/origin "$TMP/mnt"
	on_exit "umount $TMP/mnt"
	: > "$TMP/sums"
	for k in 1 2 3 4 5 6; do
		fs_write "before$k" 6
		create_snapshot "$k"
	done
	echo "six snapshots created"

	# Memory pressure: a tmpfs hog leaves about LEFT_MIB available.
	mkdir -p "$TMP/hog" && mount -t tmpfs -o size=2g tmpfs "$TMP/hog"
	on_exit "umount $TMP/hog"
	kib=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
	kib=$((kib - LEFT_MIB * 1024))
	[ "$kib" -gt 0 ] && head -c $((kib * 1024)) /dev/zero > "$TMP/hog/fill"
	echo "MemAvailable with the hog: about $LEFT_MIB MiB" >&2
	awk '/^(MemAvailable|MemFree):/' /proc/meminfo >&2

	control_loops
	local p1 p2 p3
	for ((k = 0; k < ROUNDS; k++)); do
		fs_write "under$k" 2 &
		p1=$!
		snap_write 2 4 &
		p2=$!
		snap_write 5 4 &
		p3=$!
		wait "$p1" "$p2" "$p3" || echo "round $k: a write failed"
	done
	touch "$TMP/stop"
	wait "$(cat "$TMP/loop1.pid")" "$(cat "$TMP/loop2.pid")" 2>/dev/null
	rm -f "$TMP/hog/fill"
	umount "$TMP/mnt"
	for k in 1 2 3 4 5 6; do
		st=$(snapshot_status "s$k")
		case "$st" in Invalid | Overflow) echo "s$k: $st" ;; esac
	done

	# Every snapshot reloaded from its COW device.
	for k in 1 2 3 4 5 6; do
		dmsetup remove "s$k"
	done
	for k in 1 2 3 4 5 6; do
		dmsetup create "s$k" --table "0 $(sectors /dev/ram0) snapshot /dev/ram0 /dev/ram$k ${TYPES[$((k - 1))]} ${CHUNKS[$((k - 1))]}"
		compare "snapshot $k reloaded" "/dev/mapper/s$k" "$TMP/exp-$k"
	done
	fsck.ext4 -n -f /dev/mapper/origin > "$TMP/fsck" 2>&1 && echo "origin: fsck clean" || { echo "origin: fsck found problems"; cat "$TMP/fsck" >&2; }
	mount -t ext4 -o ro /dev/mapper/origin "$TMP/mnt"
	(cd / && md5sum -c --quiet "$TMP/sums" > "$TMP/sums.out" 2>&1) && echo "origin: every file checks" || { echo "origin: $(grep -c FAILED "$TMP/sums.out") files differ"; }
	umount "$TMP/mnt"

	# Snapshot 1 merged into the origin, the others kept.
	dmsetup remove s1
	merge_into_origin origin /dev/ram0 /dev/ram1 "${CHUNKS[0]}" > /dev/null
	compare "origin after merging snapshot 1" /dev/mapper/origin "$TMP/exp-1"
	for k in 2 3 4 5 6; do
		compare "snapshot $k after the merge" "/dev/mapper/s$k" "$TMP/exp-$k"
	done

	# The comparison can fail.
	cp "$TMP/exp-3" "$TMP/wrong"
	printf '\xff' | dd of="$TMP/wrong" bs=1 seek=$((5 * 4096 + 17)) conv=notrunc status=none
	cmp -s "$TMP/wrong" "$TMP/exp-3" && printf '\xfe' | dd of="$TMP/wrong" bs=1 seek=$((5 * 4096 + 17)) conv=notrunc status=none
	compare "self-check, one byte changed" /dev/mapper/s3 "$TMP/wrong"
}

note "the C store"
c_store_reports_begin
in_store c scenario | tee "$TMP/c.result"
c_store_reports_end
note "our store"
in_store ours scenario | tee "$TMP/ours.result"

for store in c ours; do
	r=$TMP/$store.result
	expect_line "$r" "self-check, one byte changed: 1 mismatched blocks" "$store: the self-check saw no mismatch"
	if grep -v '^self-check' "$r" | grep -E 'mismatched blocks$' | grep -v ': 0 mismatched blocks$'; then
		fail "$store: mismatched blocks"
	fi
	expect_line "$r" "origin: fsck clean" "$store: the origin's ext4 is damaged"
	expect_line "$r" "origin: every file checks" "$store: the origin's files changed"
	if grep -E '^(s[0-9]: (Invalid|Overflow)|round [0-9]+: a write failed)' "$r"; then
		fail "$store: a snapshot was invalidated or a write failed"
	fi
	[ "$(grep -c ': 0 mismatched blocks$' "$r")" -eq 12 ] || fail "$store: not every comparison ran"
	echo "figure: many snapshots, $store store: $(grep -c ' mismatched blocks$' "$r") comparisons," \
		"$(grep -v '^self-check' "$r" | grep -E ' mismatched blocks$' | grep -vc ': 0 mismatched blocks$') with mismatched blocks"
done
