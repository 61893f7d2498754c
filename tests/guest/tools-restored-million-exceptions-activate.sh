#!/usr/bin/env bash
# A COW device with 1,000,000 exceptions written by snap_restore activates
# under our store with all of them. In the guest, crash_workload
# permutation-dump writes a dump (tools/README.md format, chunk size 8 =
# 4 KiB, 256 exceptions per area; awk took 44 s for it under TCG):
# exception i maps origin chunk (i * 7919) mod N (a permutation, so
# dm-snapshot cannot fold neighbours into ranges and keeps a million
# entries) to the i-th data chunk of the COW device, 2 + a*257 + i%256 for
# area a = i/256. COW and origin are 4000 MiB loop devices over sparse files
# on a private tmpfs (only the ~16 MiB of metadata and a few test chunks
# take memory). snap_restore writes the store, snap_check finds it clean
# with 1,000,000 exceptions and next_free 1003908; a few data chunks get
# distinct contents. The snapshot activates (the time it takes is printed),
# its status is allocated = next_free * 8 and metadata = (areas + 1) * 8
# sectors ("8031264/8192000 31264"), and reading the snapshot at the origin
# chunks of exceptions 0, 255, 256, 500000 and 999999 returns the contents
# of their COW chunks. The C store then does the same (same status); the
# activation times of both are printed (ours ~13 s under TCG).
# timeout: 600
# cost: 67
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/compat-lib.sh"

TOOLS=$(snap_tools release)
crash_bin crash_workload
EPA=256
MUL=7919
# DMSNAP_MILLION_N (passed in by run-guest.sh) sets another count, e.g.
# 100000 on the debug kernel, where KASAN and kmemleak make each of the
# million insertions of an activation slow; it must not be a multiple of
# 7919.
N=${DMSNAP_MILLION_N:-1000000}
[ $((N % MUL)) -ne 0 ] || fail "DMSNAP_MILLION_N=$N is a multiple of $MUL"
SIZE_MIB=4000
COW_SECTORS=$((SIZE_MIB * 2048))

old_of() { echo $(($1 * MUL % N)); }
new_of() { echo $((2 + $1 / EPA * (EPA + 1) + $1 % EPA)); }

BIG=$TMP/big
mkdir "$BIG"
mount -t tmpfs -o size=6g tmpfs "$BIG"
on_exit "umount $BIG"
modprobe loop
truncate -s ${SIZE_MIB}M "$BIG/origin.img" "$BIG/cow.img"
ORIGIN=$(losetup -f --show "$BIG/origin.img")
on_exit "losetup -d $ORIGIN"
COW=$(losetup -f --show "$BIG/cow.img")
on_exit "losetup -d $COW"
note "origin $ORIGIN, cow $COW, $COW_SECTORS sectors each, tools in $TOOLS"

t0=$(date +%s.%N)
"$BIN/crash_workload" permutation-dump "$N" $EPA $MUL "$COW_SECTORS" > "$BIG/dump.xml" ||
	fail "crash_workload permutation-dump failed"
t1=$(date +%s.%N)
note "dump of $N exceptions: $(stat -c %s "$BIG/dump.xml") bytes in $(echo "$t1 - $t0" | bc) s"
"$TOOLS/snap_restore" -q -i "$BIG/dump.xml" -o "$COW" || fail "snap_restore failed"
t2=$(date +%s.%N)
note "snap_restore: $(echo "$t2 - $t1" | bc) s; cow file uses $(du -k "$BIG/cow.img" | cut -f1) KiB"
"$TOOLS/snap_check" --json "$COW" > "$BIG/check.json" || fail "snap_check: $(tail -c 600 "$BIG/check.json")"
t3=$(date +%s.%N)
note "snap_check: $(echo "$t3 - $t2" | bc) s: $(grep -o '"summary":.*' "$BIG/check.json")"
field() { grep -o "\"$1\":[0-9a-z_\"]*" "$BIG/check.json" | tail -n1 | cut -d: -f2 | tr -d '"'; }
expect_eq "snap_check exceptions" "$N" "$(field exceptions)"
expect_eq "snap_check verdict" valid "$(field verdict)"
next_free=$(field next_free)
last=$((N - 1))
want_next=$(($(new_of $last) + 1))
[ $((N % EPA)) -eq 0 ] && want_next=$((want_next + 1))
expect_eq "snap_check next_free" "$want_next" "$next_free"
areas=$(((N + EPA) / EPA))	# the areas read: a full last area is followed by an empty one
rm "$BIG/dump.xml"

# Distinct contents in the COW chunks of a few exceptions.
probes="0 255 256 $((N / 2)) $last"
for i in $probes; do
	make_pattern "$TMP/chunk-$i" 4
	dd if="$TMP/chunk-$i" of="$COW" bs=4096 seek="$(new_of "$i")" conv=notrunc oflag=direct status=none
done

# activate STORE: the snapshot on COW with STORE serving "P": status and
# probes as above; prints the activation time.
activate() {
	local t0 t1 st i
	use_store "$1"
	t0=$(date +%s.%N)
	dmsetup create snap --table "0 $COW_SECTORS snapshot $ORIGIN $COW P 8"
	t1=$(date +%s.%N)
	note "$1: activation of $N exceptions: $(echo "$t1 - $t0" | bc) s"
	st=$(snapshot_status snap)
	note "$1: status: $st"
	expect_eq "$1: status" "$((next_free * 8))/$COW_SECTORS $(((areas + 1) * 8))" "$st"
	for i in $probes; do
		cmp -s <(read_at /dev/mapper/snap $(($(old_of "$i") * 4)) 4) "$TMP/chunk-$i" ||
			fail "$1: snapshot chunk $(old_of "$i") (exception $i) does not show COW chunk $(new_of "$i")"
	done
	t0=$(date +%s.%N)
	dmsetup remove snap
	t1=$(date +%s.%N)
	note "$1: removal: $(echo "$t1 - $t0" | bc) s"
}
dm_remove_all_on_exit
activate ours
# The C store for comparison (same status, its activation time).
activate c
