#!/usr/bin/env bash
# Run every test: host checks (cargo tests, bounded fuzzing, rustfmt, clippy,
# module build) and the guest tests in the VM. Installs and builds whatever
# is missing first. Ends with one line "N passed, N failed".
#   scripts/test.sh            everything
#   scripts/test.sh --host     host checks only (no kernel, no VM)
#   scripts/test.sh --debug-kernel [TEST.sh...]
#                              the guest tests (all, or those named) on the
#                              debug kernel (kernel/debug.config: KASAN,
#                              kmemleak), which is not part of the default
#                              run: under TCG it is seven to ten times slower
#   scripts/test.sh --rt-kernel [TEST.sh...]
#                              the same on the PREEMPT_RT debug kernel
#                              (kernel/rt.config over debug.config)
host_only=0 debug_only=0 guest_tests=()
case "${1:-}" in
--host) host_only=1 ;;
--debug-kernel | --rt-kernel)
	debug_only=1
	if [ "$1" = --rt-kernel ]; then export DMSNAP_KERNEL=rt; else export DMSNAP_KERNEL=debug; fi
	# The tests' deadlines were measured on the test kernel.
	export DMSNAP_TIMEOUT_FACTOR=${DMSNAP_TIMEOUT_FACTOR:-10}
	export DMSNAP_BOOT_GRACE=${DMSNAP_BOOT_GRACE:-900}
	shift
	guest_tests=("$@")
	;;
esac
. "$(dirname "$0")/lib.sh"

passed=0 failed=0
failures=()
t_start=$(date +%s)

# check NAME COMMAND...: one host check, counted once; its output is shown
# only when it fails.
check() {
	local name=$1 out
	shift
	log "check: $name"
	out=$(mktemp)
	if "$@" > "$out" 2>&1; then
		passed=$((passed + 1))
		echo "PASS $name"
	else
		failed=$((failed + 1))
		failures+=("$name")
		echo "FAIL $name"
		tail -n 40 "$out" | sed 's/^/    | /'
	fi
	rm -f "$out"
}

# checkpatch_clean SRC: every patch of the series, checked by the kernel
# tree's own checkpatch.pl run from that tree (it reads MAINTAINERS and the
# spelling list there); any error, warning or check fails.
checkpatch_clean() {
	local p out rc=0
	for p in "$TOP"/patches/*.patch; do
		out=$(cd "$1" && perl scripts/checkpatch.pl --strict --color=never "$p" 2>&1) || rc=1
		echo "$out"
		grep -q '^total: 0 errors, 0 warnings, 0 checks' <<< "$out" || rc=1
	done
	return $rc
}

# no_warnings COMMAND...: run it; fail if it fails or prints a warning.
no_warnings() {
	local out rc=0
	out=$(mktemp)
	"$@" > "$out" 2>&1 || rc=$?
	cat "$out"
	# rustc/clippy start lines with "warning"; objtool and modpost name a file first.
	if [ $rc -eq 0 ] && grep -q -E '(^|: )(warning|error)(:|\[)' "$out"; then rc=1; fi
	rm -f "$out"
	return $rc
}

# bench_report_of RAW: scripts/bench.sh --report makes a table per workload
# of RAW (as many as RAW names) and a plot.
bench_report_of() {
	local out rc=0
	[ -s "$1" ] || { echo "no records: $1"; return 1; }
	out=$(mktemp -d)
	"$TOP/scripts/bench.sh" --report "$1" "$out" || rc=1
	local want
	want=$(cut -d, -f1 "$1" | sort -u | wc -l)
	[ "$(grep -c '^### w' "$out/stores.md")" -eq "$want" ] || { echo "not $want workloads in stores.md"; rc=1; }
	grep -q '</svg>' "$out/stores.svg" || { echo "no plot"; rc=1; }
	rm -rf "$out"
	return $rc
}

"$TOP/scripts/install-deps.sh"

# Cargo's build output lives in the cache directory (a link from the work
# tree), one per clone path, so that a fresh clone at the same path (as CI
# makes) does not compile every dependency again; cargo fingerprints the
# sources, so a stale build is never used. Not one for all paths: cargo
# does not rebuild a workspace that moved, and a test built at another path
# keeps that path (env!("CARGO_BIN_EXE_..."), CARGO_MANIFEST_DIR).
cargo_key=$(printf '%s' "$TOP" | sha256sum | cut -c1-16)
for d in target format/fuzz/target; do
	cache=$CACHE_DIR/cargo/$cargo_key/${d//\//-}
	mkdir -p "$cache"
	if [ -L "$TOP/$d" ] && [ "$(readlink "$TOP/$d")" != "$cache" ]; then
		rm "$TOP/$d"
	fi
	if [ ! -e "$TOP/$d" ]; then
		ln -s "$cache" "$TOP/$d"
	fi
done

# --- host: cargo tests of the host crates, counted test by test
if [ -f "$TOP/Cargo.toml" ] && [ "$debug_only" -eq 0 ]; then
	log "cargo test (workspace)"
	out=$(mktemp)
	if (cd "$TOP" && cargo test --workspace --locked 2>&1) | tee "$out" | grep -E '^(test result|error|failures:|---- )' ; then :; fi
	p=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^passed/) s += $i } END { print s + 0 }' "$out")
	f=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^failed/) s += $i } END { print s + 0 }' "$out")
	passed=$((passed + ${p:-0}))
	failed=$((failed + ${f:-0}))
	if ! grep -q '^test result:' "$out" || grep -q -E '^error(\[|:)' "$out"; then
		failed=$((failed + 1))
		failures+=("cargo test (did not build or run)")
		tail -n 40 "$out" | sed 's/^/    | /'
	fi
	[ "${f:-0}" -eq 0 ] || failures+=("cargo test: $f failed")
	rm -f "$out"
	check "cargo clippy clean" no_warnings sh -c "cd '$TOP' && cargo clippy --workspace --all-targets --locked -- -D warnings"
	check "cargo fmt clean" sh -c "cd '$TOP' && cargo fmt --all --check"
fi
if [ -x "$TOP/format/fuzz/run.sh" ] && [ "$debug_only" -eq 0 ]; then
	check "fuzz parse_cow for ${DMSNAP_FUZZ_SECONDS:-30}s without a crash" \
		"$TOP/format/fuzz/run.sh" "${DMSNAP_FUZZ_SECONDS:-30}"
fi

if [ "$debug_only" -eq 0 ]; then
	check "tools benchmark runs (scripts/bench-tools.sh --smoke)" "$TOP/scripts/bench-tools.sh" --smoke
fi

if [ "$host_only" -eq 0 ]; then
	# --- the kernel and the module
	KDIR=$("$TOP/scripts/build-kernel.sh")
	export KDIR
	check "kernel patches pass checkpatch --strict" checkpatch_clean "$KDIR/../linux"
	check "module rustfmt clean" make -C "$TOP" -s rustfmtcheck
	check "module clippy clean" no_warnings make -C "$TOP" -s clippy
	check "module builds without warnings" no_warnings make -C "$TOP" -s modules

	# --- the guest tests run the crash tools and snap_* optimised: they
	# rebuild and check hundreds of device images, and a million exceptions,
	# under TCG (a debug snap_restore alone takes minutes there)
	check "guest tools build (release)" sh -c "cd '$TOP' && cargo build --release --locked -p dm-snap-testkit -p dm-snap-tools"
	log "guest tests"
	export DMSNAP_RESULTS=${DMSNAP_RESULTS:-$TOP/tests/results/$(date +%Y%m%d-%H%M%S)}
	out=$(mktemp)
	"$TOP/tests/run-guest.sh" "${guest_tests[@]}" | tee "$out" || true
	p=$(sed -n 's/^guest: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p' "$out")
	f=$(sed -n 's/^guest: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p' "$out")
	if [ -z "$p" ]; then
		failed=$((failed + 1))
		failures+=("guest test run did not complete")
	else
		passed=$((passed + p))
		failed=$((failed + f))
		while read -r name; do failures+=("guest: $name"); done < <(sed -n 's/^FAIL \([^:]*\):.*/\1/p' "$out")
	fi
	rm -f "$out"
	# The figures the guest tests measured, in one file that the documents
	# name: each store's crash-replay totals, and every line a test marks
	# "figure: ".
	grep -h -E '^(crash-replay|crash-subsets) (c|ours): |^figure: ' "$DMSNAP_RESULTS"/*.log 2>/dev/null |
		sed 's/^figure: //' > "$DMSNAP_RESULTS/figures.txt" || true
	log "figures of this run: $DMSNAP_RESULTS/figures.txt"
	# The host half of the store benchmark, on the records its smoke test
	# left (scripts/bench.sh --report), when that test was run.
	smoke=bench-stores-smoke-measures-every-workload-on-every-store
	if [ ${#guest_tests[@]} -eq 0 ] || printf '%s\n' "${guest_tests[@]}" | grep -q "$smoke"; then
		check "store benchmark tables and plot (scripts/bench.sh --report)" \
			bench_report_of "$DMSNAP_RESULTS/bench-smoke-raw.csv"
	fi
fi

log "done in $(($(date +%s) - t_start)) s"
for f in "${failures[@]}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
