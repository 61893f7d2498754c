#!/usr/bin/env bash
# Benchmark, not a test (scripts/bench-tools.sh --guest runs it): the
# offline tools' read-ahead on a slow device. A store of N exceptions (4 KiB
# chunks, written by snap_restore) lies on a brd disk behind dm-delay, which
# adds 1 ms to every read and write. snap_check and snap_dump read it with
# the read-ahead (the default: the next 64 areas asked for with
# POSIX_FADV_WILLNEED) and with --no-read-ahead (one area at a time),
# alternating, R rounds, with the page cache dropped before each run.
# Prints "bench: TOOL MODE SECONDS" per run and a summary line per tool:
# "bench-summary: TOOL serial S ahead S ratio X" (medians).
#   DMSNAP_BENCH_N (default 100000), DMSNAP_BENCH_ROUNDS (default 3),
#   DMSNAP_BENCH_DELAY_MS (default 1)
# timeout: 1800
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/compat-lib.sh"

TOOLS=$(snap_tools release)
N=${DMSNAP_BENCH_N:-100000}
R=${DMSNAP_BENCH_ROUNDS:-3}
D=${DMSNAP_BENCH_DELAY_MS:-1}
modprobe dm-delay || skip "no dm-delay module"

# The store as the module allocates it: 256 exceptions per 4 KiB area.
crash_bin crash_workload
[ $((N % 7919)) -ne 0 ] || fail "DMSNAP_BENCH_N=$N is a multiple of 7919"
cow_chunks=$((2 + (N / 256 + 1) * 257 + 16))
"$BIN/crash_workload" permutation-dump "$N" 256 7919 $((cow_chunks * 8)) > "$TMP/dump.xml"
make_ram_disks 1 $((cow_chunks * 4))
dm_remove_all_on_exit
"$TOOLS/snap_restore" -i "$TMP/dump.xml" -o /dev/ram0 || fail "snap_restore failed"
dmsetup create slow --table "0 $(sectors /dev/ram0) delay /dev/ram0 0 $D"
note "$N exceptions, $(((N + 255) / 256)) areas, $D ms added to each I/O"

dm=$(dmsetup info -c --noheadings -o blkdevname slow | tr -d " ")

# run TOOL MODE [DEV]: one timed run from a cold page cache; the reads the
# device completed and the milliseconds they spent, from its statistics.
run() {
	local flag=() t0 t1 dev=${3:-/dev/mapper/slow} r0 r1
	[ "$2" = serial ] && flag=(--no-read-ahead)
	# The disk under the delay is held by it.
	[ "$dev" = /dev/mapper/slow ] || flag+=(--force)
	sync
	echo 3 > /proc/sys/vm/drop_caches
	read -ra r0 < "/sys/block/$dm/stat"
	t0=$(date +%s%N)
	case "$1" in
	check) "$TOOLS/snap_check" "${flag[@]}" "$dev" > /dev/null ;;
	dump) "$TOOLS/snap_dump" "${flag[@]}" -o "$TMP/out.xml" "$dev" ;;
	esac || fail "snap_$1 ${flag[*]} failed"
	t1=$(date +%s%N)
	read -ra r1 < "/sys/block/$dm/stat"
	echo "bench: $1 $2 $(((t1 - t0) / 1000000)) ms, $((r1[0] - r0[0])) reads, $((r1[3] - r0[3])) ms in reads${3:+ (on $3, no delay)}" |
		tee -a "$TMP/times"
}

# The same without the delay: what the run costs besides waiting.
run check serial /dev/ram0
run check ahead /dev/ram0
for _ in $(seq "$R"); do
	for tool in check dump; do
		run "$tool" serial
		run "$tool" ahead
	done
done
sed -i '/no delay/d' "$TMP/times"
cmp -s <(sed -n '2,$p' "$TMP/out.xml") <(sed -n '2,$p' "$TMP/dump.xml") ||
	fail "snap_dump did not give back the exceptions restored"
for tool in check dump; do
	awk -v t="$tool" '
		function median(a, n,   i, j, x) {
			for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
			return a[int((n + 1) / 2)]
		}
		$2 == t && $3 == "serial" { s[++ns] = $4 }
		$2 == t && $3 == "ahead" { a[++na] = $4 }
		END {
			ms = median(s, ns); ma = median(a, na)
			printf "bench-summary: snap_%s serial %.3f s ahead %.3f s ratio %.2f\n", t, ms / 1000, ma / 1000, ma / ms
		}' "$TMP/times"
done
