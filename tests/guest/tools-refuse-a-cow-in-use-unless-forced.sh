#!/usr/bin/env bash
# snap_check and snap_dump open a block device exclusively: the COW device
# of a live snapshot is refused (exit 2, "in use"), and read with --force.
# Once the snapshot is gone the same commands read it without --force.
# timeout: 240
# cost: 10
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/compat-lib.sh"

TOOLS=$(snap_tools release)
use_store ours
make_ram_disks 2 1024
dm_remove_all_on_exit
dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 8)"
dmsetup create base --table "$(origin_table /dev/ram0)"
make_pattern "$TMP/4k" 4
write_at /dev/mapper/base "$TMP/4k" 0

for tool in snap_check snap_dump; do
	rc=0
	"$TOOLS/$tool" /dev/ram1 > "$TMP/out" 2> "$TMP/err" || rc=$?
	expect_eq "$tool on a COW in use: exit status" 2 "$rc"
	grep -q "in use" "$TMP/err" || fail "$tool on a COW in use said: $(cat "$TMP/err")"
	rc=0
	"$TOOLS/$tool" --force /dev/ram1 > "$TMP/out" 2> "$TMP/err" || rc=$?
	expect_eq "$tool --force on a COW in use: exit status" 0 "$rc"
done
grep -q '<exception old_chunk="0"' "$TMP/out" || fail "snap_dump --force shows no exception: $(cat "$TMP/out")"

dmsetup remove snap
dmsetup remove base
for tool in snap_check snap_dump; do
	"$TOOLS/$tool" /dev/ram1 > "$TMP/out" 2> "$TMP/err" ||
		fail "$tool on the released COW failed: $(cat "$TMP/err")"
done
