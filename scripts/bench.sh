#!/usr/bin/env bash
# The store benchmark (not a test: it measures and asserts nothing about
# speed): our store, the C store and the transient store N side by side in
# one guest boot (bench/guest/stores.sh says what each workload does).
#   scripts/bench.sh [--rounds R] [--only "w1 w3"] [--delay MS] [--w2-delay MS]
#       1 + R rounds (default 3; the first is a warm-up the report leaves
#       out); results in bench/results/<date>/: stores.md (tables),
#       stores.csv (median, min, max, ratio to C), stores.svg (one panel per
#       workload) and stores-raw.csv (every measurement)
#   scripts/bench.sh --only w2 --profile
#       the same, w2's activations on brd under perf record; the profiles
#       are left in the guest's results directory (named at the end)
#   scripts/bench.sh --smoke
#       tiny sizes, one round, nothing kept
#   scripts/bench.sh --report RAW.csv OUTDIR
#       only the host half: the tables and plot of records already taken.
#       The test command runs the guest half in smoke mode as a guest test
#       (tests/guest/bench-stores-smoke-*.sh, in the guests it boots anyway)
#       and this on its records, so that the benchmark cannot rot.
# Run it with nothing else on the machine: a build or a second guest swings
# guest timings by 2-3x. Under TCG absolute times mean little; compare the
# ratios.
# The guest runs the benchmark kernel (DMSNAP_KERNEL=bench,
# kernel/bench.config: no Rust debug assertions, built for speed, as
# distributions build it), with the module built for it in a copy of the
# sources, so that the tree's own module stays built for the test kernel.
export DMSNAP_KERNEL=${DMSNAP_KERNEL:-bench}
. "$(dirname "$0")/lib.sh"

usage() { die "usage: scripts/bench.sh [--smoke] [--rounds R] [--only \"w1 w3\"] [--delay MS] [--w2-delay MS] [--profile] | --report RAW.csv OUTDIR"; }

# report RAW OUTDIR TITLE NOTE: tables and plot.
report() {
	"$TOP/target/release/bench_report" --title "$3" --note "$4" "$1" "$2" || die "bench_report failed"
	cp "$1" "$2/stores-raw.csv"
}

smoke=0 rounds=3 only="" delay=1 w2_delay=20 profile=0
while [ $# -gt 0 ]; do
	case "$1" in
	--report)
		[ $# -eq 3 ] || usage
		(cd "$TOP" && cargo build --release --locked -q -p dm-snap-bench) || die "building bench_report failed"
		report "$2" "$3" "Store benchmark (records of $2)" "Each cell: median (min–max)."
		exit 0
		;;
	--smoke) smoke=1 rounds=1 ;;
	--profile) profile=1 ;;
	--rounds) rounds=$2; shift ;;
	--only) only=$2; shift ;;
	--delay) delay=$2; shift ;;
	--w2-delay) w2_delay=$2; shift ;;
	*) usage ;;
	esac
	shift
done

(cd "$TOP" && cargo build --release --locked -q -p dm-snap-testkit -p dm-snap-tools -p dm-snap-bench) ||
	die "building the tools failed"
KDIR=$("$TOP/scripts/build-kernel.sh")
export KDIR
res=$(mktemp -d "${TMPDIR:-/tmp}/bench-stores.XXXXXX")
mkdir "$res/module"
(cd "$TOP" && git ls-files -z Makefile Kbuild scripts/doc-examples.awk '*.rs' '*.c' | xargs -0 cp --parents -t "$res/module") ||
	die "copying the module sources failed"
make -C "$res/module" -s modules || die "building the module failed"
export DMSNAP_MODULE_KO=$res/module/dm_snap_persistent.ko

t0=$(date +%s)
DMSNAP_VMS=1 DMSNAP_VM_MEMORY=3G DMSNAP_RESULTS=$res DMSNAP_BENCH_ROUNDS=$rounds \
	DMSNAP_BENCH_SMOKE=$smoke DMSNAP_BENCH_PROFILE=$profile DMSNAP_BENCH_ONLY=$only DMSNAP_BENCH_DELAY_MS=$delay DMSNAP_BENCH_W2_DELAY_MS=$w2_delay \
	"$TOP/tests/run-guest.sh" "$TOP/bench/guest/stores.sh" >&2 || die "the guest benchmark failed: $res"
secs=$(($(date +%s) - t0))

if [ "$smoke" -eq 1 ]; then
	out=$res/report
else
	out=$TOP/bench/results/$(date -u +%Y-%m-%d)
fi
accel=$(vm_accel "$KDIR")
guest=$(sed -n 's/^--- guest: //p' "$res/stores.log" | head -n1)
report "$res/bench-raw.csv" "$out" \
	"Store benchmark: ours, C and N in one guest ($accel), $(date -u +%Y-%m-%d)" \
	"Guest under $accel ($guest), kernel $(basename "$(dirname "$KDIR")") ($(make -s -C "$KDIR" kernelrelease 2>/dev/null || echo '?')), one boot of $((secs / 60)) min; $rounds measured rounds after a warm-up, the stores taking turns in a rotating order; dm-delay adds $delay ms to each I/O (w2 also $w2_delay ms). Each cell: median (min–max). Under TCG absolute figures mean little: read the ratios."
cat "$out/stores.md"
log "written: $out/stores.{md,csv,svg}, stores-raw.csv (guest log: $res/stores.log)"
