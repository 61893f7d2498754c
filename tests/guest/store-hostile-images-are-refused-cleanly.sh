#!/usr/bin/env bash
# Hostile COW images load under our store exactly as the format core says
# they must, and never hurt the kernel. hostile_load (testkit/) takes every
# image of the parse_cow fuzz corpus (format/fuzz/corpus/parse_cow, with the
# table chunk size of its control byte) and 240 mutants of valid stores of
# 512-byte, 1 KiB and 4 KiB chunks over two or three areas, made by 32
# kinds of damage (testkit/src/hostile.rs: header fields and bit flips,
# truncations, zeroed, torn, stale, random, copied and swapped areas,
# garbage after the end marker, records zeroed, duplicated, swapped, with
# bits flipped or pointing beyond the end or at metadata, and more). Each
# image goes on a dm-linear slice of exactly its sectors and becomes the
# COW device of a snapshot table load. The load must fail exactly for the
# images the format core refuses (snap_check's verdict, plus the header
# read with the table's chunk size and a new store's area 0 having to fit
# the device, plus duplicate new_chunks), and then the slice must read
# back unchanged; a loaded image must show the core's status ("Invalid",
# or the usage figures "a/b m" of its scan) and be written only to start a
# new store (activation writes nothing to a valid store). Then the first mutant
# of each kind that snap_dump --repair can salvage is repaired and written
# back with snap_restore, as an admin would, and the kernel must load it
# with the exceptions kept and nothing to clear (at least 28 kinds). The
# harness fails the test on any BUG/WARNING/Oops in the kernel log; at the
# end no dm device may be left and nothing may hold our module.
# Measured on the 2-core development machine under TCG, beside another
# guest: 282 images (14 of the corpus, 240 mutants, 28 repaired) in 46 s.
# timeout: 600
# cost: 57
. "$DMSNAP_HARNESS/lib.sh"

crash_bin hostile_load
CORPUS=$TOP/format/fuzz/corpus/parse_cow
[ -d "$CORPUS" ] || fail "no fuzz corpus at $CORPUS"

use_store ours
# origin (ram0) and scratch (ram1): 4 MiB each, above the largest image
make_ram_disks 2 4096
dm_remove_all_on_exit

rc=0
t0=$(date +%s)
"$BIN/hostile_load" "$CORPUS" /dev/ram1 /dev/ram0 --mutants 240 --seed 1 > "$TMP/out" || rc=$?
cat "$TMP/out"
echo "--- $(($(date +%s) - t0)) s"
summary=$(grep '^hostile: .* images' "$TMP/out") || fail "hostile_load printed no summary (status $rc)"
[ "$rc" -eq 0 ] || fail "hostile_load failed (status $rc): $summary"
if grep -q '^FAIL ' "$TMP/out"; then
	fail "failure lines with status 0: $summary"
fi

left=$(ls /sys/block | grep '^dm-' | tr '\n' ' ' || true)
[ -z "$left" ] || fail "dm devices left behind: $left($(dmsetup ls | tr '\n' ' '))"
if [ -r /sys/module/dm_snap_persistent/refcnt ]; then
	expect_eq "users of dm_snap_persistent after the run" 0 "$(cat /sys/module/dm_snap_persistent/refcnt)"
fi
note "$summary"
