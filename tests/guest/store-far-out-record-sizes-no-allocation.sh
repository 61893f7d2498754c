#!/usr/bin/env bash
# One record can name any chunk of the COW device. Activation must not size
# an allocation from it: a record near the end of a 1 TiB or 8 TiB COW
# device (512-byte chunks: 2^31 and 2^34 chunks) must load with VmallocUsed
# growing by a few MiB at most (dm-snapshot's own hash tables take about
# 2.3 MiB with either store) and no kernel warning, and both stores must
# give the same verdict. Two records sharing such a chunk are refused by
# our store, naming both. COW devices are sparse files on tmpfs.
# timeout: 300
# cost: 40
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/failure-lib.sh"

make_pattern "$TMP/orig" 64
modprobe loop
BIG=$TMP/big
mkdir -p "$BIG"
mount -t tmpfs -o size=16m tmpfs "$BIG"
on_exit "umount $BIG"

# vmalloc_used: VmallocUsed in KiB.
vmalloc_used() {
	local k v rest
	while read -r k v rest; do
		[ "$k" = VmallocUsed: ] && { echo "$v"; return; }
	done < /proc/meminfo
}

# sample_vmalloc FILE: write VmallocUsed to FILE over and over (shell
# builtins only, to sample often) until killed.
sample_vmalloc() {
	while :; do vmalloc_used; done > "$1"
}

# observe SIZE SECOND: a COW device of SIZE with one record near its end
# (and a second record using the same chunk when SECOND is "dup"); load it
# and report the verdict and the peak VmallocUsed growth.
observe() {
	local size=$1 cow chunks far base peak pid
	make_ram_disks 1 64
	dm_remove_all_on_exit
	write_at /dev/ram0 "$TMP/orig" 0
	rm -f "$BIG/cow.img"
	truncate -s "$size" "$BIG/cow.img"
	cow=$(losetup -f --show "$BIG/cow.img")
	on_exit "losetup -d $cow"
	chunks=$(sectors "$cow")
	# A data chunk near the end (areas sit at 1 + 33k).
	far=$((chunks - 2))
	[ $((far % 33)) -eq 1 ] && far=$((far - 1))
	write_header "$cow" "$SNAP_MAGIC" 1 1 1
	write_exception "$cow" 1 1 0 7 "$far"
	[ "$2" = dup ] && write_exception "$cow" 1 1 1 9 "$far"
	base=$(vmalloc_used)
	sample_vmalloc "$TMP/samples" &
	pid=$!
	kmsg_mark
	echo "$size $2: load: $(try_create snap "$(snapshot_table /dev/ram0 "$cow" P 1)")"
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	peak=$(sort -n "$TMP/samples" | tail -n1)
	echo "$size $2: samples $(wc -l < "$TMP/samples"), VmallocUsed +$((peak - base)) KiB" >&2
	echo "figure: far-out record ($2), $STORE store, $size COW: VmallocUsed +$((peak - base)) KiB during the load"
	echo "vmalloc-growth $size $2 $((peak - base))" >> "$TMP/growth.$STORE"
	dm_msgs | { grep "persistent snapshot" || true; } | sed "s/^/$size $2: log: /"
	[ -e /dev/mapper/snap ] && dmsetup remove snap
	true
}

run() {
	STORE=$1
	observe 1T one
	observe 8T one
	observe 1T dup
}

for store in c ours; do
	in_store "$store" run "$store" > "$TMP/$store.out"
	cat "$TMP/$store.out"
done
# Our verdicts: the single records load, the shared chunk is refused.
expect_line "$TMP/ours.out" "1T one: load: created" "our store refused a 1 TiB COW with one far record"
expect_line "$TMP/ours.out" "8T one: load: created" "our store refused an 8 TiB COW with one far record"
expect_line "$TMP/ours.out" "1T dup: load: refused" "our store loaded two records sharing a chunk"
expect_text "$TMP/ours.out" "is already used by exception 0 of area 0" "our store did not name the first record"
# The C store's verdicts on the single records are the same.
grep -E '^(1T|8T) one: load:' "$TMP/c.out" > "$TMP/c.verdicts"
grep -E '^(1T|8T) one: load:' "$TMP/ours.out" > "$TMP/ours.verdicts"
diff -u "$TMP/c.verdicts" "$TMP/ours.verdicts" || fail "verdicts differ from the C store's"
cat "$TMP/growth.c" "$TMP/growth.ours"
while read -r _ size kind kib; do
	[ "$kib" -le 6144 ] || fail "our store: VmallocUsed grew by $kib KiB loading the $size COW ($kind)"
done < "$TMP/growth.ours"
