#!/usr/bin/env bash
# The store benchmark's guest script (bench/guest/stores.sh, which
# scripts/bench.sh runs) in its smoke mode: tiny sizes, one measured round
# and no warm-up. It must run to the end and leave, for every workload, a
# measured figure of every store that workload applies to (w2 activation and
# w3 merge: ours and C; the others: ours, C and N), and the figures must
# say what they measure: writes and reads per second above zero, and for
# our store and C metadata written per exception above zero on w1. The
# test command then turns the records into tables and a plot with
# scripts/bench.sh --report, so that neither half of the benchmark rots.
# Nothing is timed against anything.
# timeout: 1200
# cost: 155
. "$DMSNAP_HARNESS/lib.sh"

RAW=$DMSNAP_RESULTS/bench-smoke-raw.csv
DMSNAP_BENCH_SMOKE=1 DMSNAP_BENCH_RAW=$RAW bash "$TOP/bench/guest/stores.sh" ||
	fail "bench/guest/stores.sh failed"
measured() { awk -F, -v w="$1" -v s="$2" -v m="$3" '$1 == w && $5 == s && $4 == m && $6 > 0' "$RAW"; }
for w in w1 w2 w3 w4 w5 w6; do
	case "$w" in
	w1 | w6) metric=writes/s ;;
	w2 | w3) metric=seconds ;;
	w4) metric=reads/s ;;
	w5) metric="KiB used (MemFree)" ;;
	esac
	for s in ours c n; do
		n=$(measured "$w" "$s" "$metric" | wc -l)
		case "$w$s" in
		w2n | w3n) expect_eq "$w records of N" 0 "$n" ;;
		*) [ "$n" -gt 0 ] || fail "$w: no measured '$metric' of store $s" ;;
		esac
	done
done
bad=$(awk -F, '($4 ~ /\/s$/ && $7 <= 0) || ($1 == "w1" && $4 ~ /^metadata/ && $5 != "n" && $7 <= 0)' "$RAW")
[ -z "$bad" ] || fail "figures that cannot be: $bad"
note "$(wc -l < "$RAW") records"
