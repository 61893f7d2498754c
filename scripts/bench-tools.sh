#!/usr/bin/env bash
# Speed and memory of the offline tools on large stores (host only, no VM).
#   scripts/bench-tools.sh [--rounds R] [N]   N exceptions (default 10000000)
#   scripts/bench-tools.sh --smoke            20000 exceptions, one round,
#                                             nothing kept (the test command
#                                             runs it so the script cannot rot)
#   scripts/bench-tools.sh --guest [--rounds R] [N]
#                                             only the read-ahead benchmark in
#                                             a guest (bench/guest/
#                                             tools-read-ahead.sh, N default
#                                             100000): snap_check and snap_dump
#                                             behind dm-delay (1 ms), with and
#                                             without read-ahead
# Two stores of N exceptions at 4 KiB chunks, as the module allocates them
# (new_chunk in order), one with origin chunks a permutation of 0..N, one
# with random 50-bit origin chunks. For each: snap_restore of its dump to a
# new sparse image, then R timed rounds (after one untimed warm-up, so the
# page cache is warm) of snap_check, snap_dump, snap_dump --repair and
# snap_restore --force of the dump over the image. Prints a table (median,
# min, max wall time, largest RSS) and, unless --smoke, writes it to
# bench/results/<date>/tools.md and tools.csv. Run it with nothing else on
# the machine: a build or a guest beside it swings the times.
. "$(dirname "$0")/lib.sh"

smoke=0 guest=0 rounds=3 n=""
while [ $# -gt 0 ]; do
	case "$1" in
	--smoke) smoke=1 rounds=1 n=20000 ;;
	--guest) guest=1 ;;
	--rounds) rounds=$2; shift ;;
	-*) die "unknown option $1" ;;
	*) n=$1 ;;
	esac
	shift
done
if [ "$guest" -eq 1 ]; then
	(cd "$TOP" && cargo build --release --locked -q -p dm-snap-tools) || die "building the tools failed"
	KDIR=$("$TOP/scripts/build-kernel.sh")
	export KDIR
	res=$(mktemp -d "${TMPDIR:-/tmp}/bench-tools-guest.XXXXXX")
	DMSNAP_VMS=1 DMSNAP_RESULTS=$res DMSNAP_BENCH_N=${n:-100000} DMSNAP_BENCH_ROUNDS=$rounds \
		"$TOP/tests/run-guest.sh" "$TOP/bench/guest/tools-read-ahead.sh" || die "the guest benchmark failed: $res"
	grep -E '^(bench|bench-summary):|^--- ' "$res/tools-read-ahead.log"
	dir=$TOP/bench/results/$(date -u +%Y-%m-%d)
	mkdir -p "$dir"
	{
		echo "# Offline tools behind dm-delay (1 ms per I/O), in a guest ($(vm_accel "$KDIR")), $(date -u +%Y-%m-%d)"
		echo
		grep '^--- ' "$res/tools-read-ahead.log" | sed 's/^--- //'
		echo
		echo "| tool | serial s (median) | read-ahead s (median) | read-ahead / serial |"
		echo "|---|---|---|---|"
		sed -n 's/^bench-summary: \(.*\) serial \(.*\) s ahead \(.*\) s ratio \(.*\)/| \1 | \2 | \3 | \4 |/p' "$res/tools-read-ahead.log"
		echo
		echo "Each run: $rounds rounds, alternating, page cache dropped before each."
	} > "$dir/tools-read-ahead.md"
	cat "$dir/tools-read-ahead.md"
	log "written: ${dir#"$TOP/"}/tools-read-ahead.md"
	exit 0
fi
n=${n:-10000000}
[ "$rounds" -ge 1 ] && [ "$n" -ge 1 ] || die "rounds and N must be positive"
command -v /usr/bin/time >/dev/null || die "GNU time (/usr/bin/time) is missing: scripts/install-deps.sh installs it"

(cd "$TOP" && cargo build --release --locked -q -p dm-snap-tools -p dm-snap-testkit) || die "building the tools failed"
BIN=$TOP/target/release
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-tools.XXXXXX")
trap 'rm -rf "$work"' EXIT

# gen KIND: the dump of N exceptions, 4 KiB chunks, 256 per area, in the
# store's allocation order (crash_workload, as the million-exception test
# makes its dump): origin chunks a permutation of 0..N (i * 2654435761 mod
# N, a prime above any N here) or random 50-bit values.
gen() {
	local cow=$(((2 + (n / 256 + 1) * 257 + 16) * 8))
	case "$1" in
	perm) "$BIN/crash_workload" permutation-dump "$n" 256 2654435761 "$cow" ;;
	rand) "$BIN/crash_workload" random-dump "$n" 256 "$cow" ;;
	esac
}

# timed OUT CMD...: run CMD, append "seconds max-rss-KB" to OUT; fail on
# a nonzero status.
timed() {
	local out=$1
	shift
	/usr/bin/time -o "$work/t" -f "%e %M" "$@" > /dev/null 2> "$work/err" ||
		die "$* failed: $(tail -n 3 "$work/err")"
	cat "$work/t" >> "$out"
}

rows=()
# measure LABEL DATA CMD...: one warm-up, then the timed rounds.
measure() {
	local label=$1 data=$2 f
	shift 2
	f=$work/$data.$label.times
	: > "$f"
	"$@" > /dev/null 2>&1 || true
	for _ in $(seq "$rounds"); do timed "$f" "$@"; done
	rows+=("$(sort -n "$f" | awk -v l="$label" -v d="$data" '
		{ t[NR] = $1; if ($2 > m) m = $2 }
		END { printf "%s|%s|%.2f|%.2f|%.2f|%.1f\n", l, d, t[int((NR + 1) / 2)], t[1], t[NR], m / 1024 }')")
}

load0=$(cut -d' ' -f1 /proc/loadavg)
for data in perm rand; do
	log "$data: generating a dump of $n exceptions"
	gen "$data" > "$work/$data.xml"
	img=$work/$data.img
	f=$work/$data.new.times
	: > "$f"
	timed "$f" "$BIN/snap_restore" -i "$work/$data.xml" -o "$img"
	rows+=("$(awk -v d="$data" '{ printf "restore to a new image|%s|%.2f|%.2f|%.2f|%.1f\n", d, $1, $1, $1, $2 / 1024 }' "$f")")
	log "$data: $rounds rounds"
	measure "check" "$data" "$BIN/snap_check" "$img"
	measure "dump" "$data" "$BIN/snap_dump" "$img"
	measure "dump --repair" "$data" "$BIN/snap_dump" --repair -q "$img"
	measure "restore --force over it" "$data" "$BIN/snap_restore" --force -i "$work/$data.xml" -o "$img"
	rm -f "$img"
done

table() {
	echo "| tool | origin chunks | median s | min s | max s | max RSS MB |"
	echo "|---|---|---|---|---|---|"
	local r
	for r in "${rows[@]}"; do echo "| ${r//|/ | } |"; done
}
header="$n exceptions, 4 KiB chunks, $rounds rounds after a warm-up, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $load0 at the start, $(date -u +%Y-%m-%d)"
echo "$header"
table
if [ "$smoke" -eq 0 ]; then
	dir=$TOP/bench/results/$(date -u +%Y-%m-%d)
	mkdir -p "$dir"
	{
		echo "# Offline tools: $header"
		echo
		table
	} > "$dir/tools.md"
	{
		echo "tool,origin_chunks,median_s,min_s,max_s,max_rss_mb"
		printf '%s\n' "${rows[@]}" | tr '|' ','
	} > "$dir/tools.csv"
	log "written: ${dir#"$TOP/"}/tools.md, tools.csv"
fi
