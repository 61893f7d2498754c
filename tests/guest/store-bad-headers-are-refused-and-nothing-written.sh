#!/usr/bin/env bash
# A COW device whose header is bad makes the snapshot table load fail, the
# kernel log names the problem, and not one byte of the COW device changes:
#   magic 0xdeadbeef        -> "Invalid or corrupt snapshot" (-ENXIO)
#   version 2               -> "unable to handle snapshot disk version 2"
#   chunk size 0            -> "invalid on-disk chunk size 0: Chunk size is not a power of 2."
#   chunk size 3            -> "invalid on-disk chunk size 3: Chunk size is not a power of 2."
#   chunk size 2^22         -> "invalid on-disk chunk size 4194304: Chunk size is too high."
#   chunk size 1024 sectors, larger than the 512-sector COW: the first
#     metadata area lies past the device end. C has no check: it reads there,
#     the read fails and the load fails with -EIO; our store refuses it
#     from the header, before allocating anything of that chunk size
#     ("on-disk chunk size 1024 leaves no room for the header and metadata
#     area 0 on a COW device of 512 sectors"), also with -EIO. The store's
#     own line is left out of the comparison for this case and checked per
#     store.
# The table line of each refusal (dm core's "Failed to read snapshot
# metadata (-E...)", errno printed as a number when the kernel lacks
# CONFIG_SYMBOLIC_ERRNAME) and the store's messages are the same for both
# stores.
# timeout: 240
# cost: 43
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/failure-lib.sh"

make_pattern "$TMP/orig" 256
make_pattern "$TMP/junk" 64

# name magic valid version chunk_size
cases=(
	"garbage-magic $((0xdeadbeef)) 1 1 1"
	"version-2 $SNAP_MAGIC 1 2 1"
	"chunk-0 $SNAP_MAGIC 1 1 0"
	"chunk-3 $SNAP_MAGIC 1 1 3"
	"chunk-2^22 $SNAP_MAGIC 1 1 4194304"
	"chunk-beyond-cow $SNAP_MAGIC 1 1 1024"
)

observe() {
	local c name magic valid version chunk before after store
	our_store_serves && store=ours || store=c
	make_ram_disks 2 256
	dm_remove_all_on_exit
	write_at /dev/ram0 "$TMP/orig" 0
	# something to lose past the header, in what would be area 0 and data
	write_at /dev/ram1 "$TMP/junk" 1
	for c in "${cases[@]}"; do
		read -r name magic valid version chunk <<< "$c"
		write_header /dev/ram1 "$magic" "$valid" "$version" "$chunk"
		before=$(cow_sum /dev/ram1)
		kmsg_mark
		echo "$name: $(try_create snap "$(snapshot_table /dev/ram0 /dev/ram1 P 1)")"
		after=$(cow_sum /dev/ram1)
		[ "$before" = "$after" ] && echo "$name: COW unchanged" || echo "$name: COW CHANGED"
		if [ "$name" = chunk-beyond-cow ]; then
			dm_msgs | grep -v '^device-mapper: persistent snapshot: ' | sed "s/^/$name log: /"
			dm_msgs | grep '^device-mapper: persistent snapshot: ' > "$TMP/$store-$name.store-log" || true
		else
			dm_msgs | sed "s/^/$name log: /"
		fi
	done
	echo "origin unchanged: $(cmp -s <(read_at /dev/ram0 0 256) "$TMP/orig" && echo yes || echo no)"
}

same_on_both_stores observe
o=$TMP/ours.out
for c in "${cases[@]}"; do
	read -r name _ <<< "$c"
	expect_line "$o" "$name: refused" "$name: the table load was not refused"
	expect_line "$o" "$name: COW unchanged" "$name: the COW device was written"
done
expect_line() {
	grep -qF -- "$1 log: $2" "$o" || fail "$1: the kernel log has no '$2'"
}
# dm core prints the errno symbolically only with CONFIG_SYMBOLIC_ERRNAME
expect_refusal() {
	grep -qE -- "^$1 log: device-mapper: table: DEV: snapshot: Failed to read snapshot metadata \\((-$2|-$3)\\)\$" "$o" ||
		fail "$1: no table load failure with -$2"
}
expect_line garbage-magic "device-mapper: persistent snapshot: Invalid or corrupt snapshot"
expect_refusal garbage-magic ENXIO 6
expect_line version-2 "device-mapper: persistent snapshot: unable to handle snapshot disk version 2"
expect_refusal version-2 EINVAL 22
expect_line chunk-0 "device-mapper: persistent snapshot: invalid on-disk chunk size 0: Chunk size is not a power of 2."
expect_refusal chunk-0 EINVAL 22
expect_line chunk-3 "device-mapper: persistent snapshot: invalid on-disk chunk size 3: Chunk size is not a power of 2."
expect_refusal chunk-3 EINVAL 22
expect_line chunk-2^22 "device-mapper: persistent snapshot: invalid on-disk chunk size 4194304: Chunk size is too high."
expect_refusal 'chunk-2\^22' EINVAL 22
expect_refusal chunk-beyond-cow EIO 5
echo "--- store lines for chunk-beyond-cow, C:"
cat "$TMP/c-chunk-beyond-cow.store-log"
echo "--- ours:"
cat "$TMP/ours-chunk-beyond-cow.store-log"
grep -q "on-disk chunk size 1024 leaves no room for the header and metadata area 0 on a COW device of 512 sectors" "$TMP/ours-chunk-beyond-cow.store-log" ||
	fail "chunk-beyond-cow: our store does not name the problem"
