#!/usr/bin/env bash
# Run the guest tests (tests/guest/*.sh, or the ones named) in VMs and report
# each one. A test fails when it exits non-zero, when the kernel logs a
# BUG/WARNING/Oops/KASAN/hung-task report while it runs, or when it leaves no
# result because the guest crashed or hung: the host watches each test's
# deadline, kills a hung guest, and boots again for the tests after it.
#
# The tests are shared out over DMSNAP_VMS guests running side by side
# (default: 2 on a machine with 2 or more cores), balanced by their
# declared costs ("# cost: SECONDS", measured under TCG with two guests;
# the timeout where a test declares none); under TCG a guest mostly keeps
# one host core busy.
#   tests/run-guest.sh [TEST.sh...]
# Ends with "guest: N passed, N failed, N skipped"; exit status 1 if any failed.
. "$(dirname "$0")/../scripts/lib.sh"

if [ $# -gt 0 ]; then
	tests=("$@")
else
	tests=("$TOP"/tests/guest/*.sh)
fi
for i in "${!tests[@]}"; do tests[$i]=$(realpath "${tests[$i]}"); done

RES=${DMSNAP_RESULTS:-$TOP/tests/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RES"
RES=$(realpath "$RES")

# Patterns of a kernel in trouble.
SPLAT='BUG:|WARNING:|Oops|KASAN|UBSAN|Kernel panic|general protection fault|INFO: task .* blocked|rcu: .* stall|Unable to handle kernel'

BOOT_GRACE=${DMSNAP_BOOT_GRACE:-300}	# boot to first test start, seconds
HANG_GRACE=30				# past a test's own timeout

name_of() { basename "$1" .sh; }
cost_of() {
	local c
	c=$(sed -n 's/^# cost: *\([0-9]*\).*/\1/p' "$1" | head -n1)
	echo "${c:-$(timeout_of "$1")}"
}
timeout_of() {
	local t
	t=$(sed -n 's/^# timeout: *\([0-9]*\).*/\1/p' "$1" | head -n1)
	echo "${t:-300}"
}

# verdict NAME VERDICT [REASON]: record a test's outcome for the report.
verdict() {
	printf '%s\t%s\n' "$2" "${3:-}" > "$RES/$1.verdict"
}

# run_shard ID TEST...: boot guests until every test has a verdict.
run_shard() {
	local shard=$1
	shift
	local remaining=("$@") boot=0 console vm started killed now current n t limit age
	local next progress rc splat
	while [ ${#remaining[@]} -gt 0 ]; do
		boot=$((boot + 1))
		console=$RES/console-$shard-$boot.log
		printf '%s\n' "${remaining[@]}" > "$RES/tests-$shard-$boot.list"
		setsid "$TOP/scripts/vm.sh" --rwdir "$RES" -- env DMSNAP_SELFTEST="${DMSNAP_SELFTEST:-}" DMSNAP_FAULT_STORES="${DMSNAP_FAULT_STORES:-}" DMSNAP_FAULT_SCENARIOS="${DMSNAP_FAULT_SCENARIOS:-}" \
			DMSNAP_MILLION_N="${DMSNAP_MILLION_N:-}" DMSNAP_BENCH_N="${DMSNAP_BENCH_N:-}" DMSNAP_BENCH_ROUNDS="${DMSNAP_BENCH_ROUNDS:-}" DMSNAP_BENCH_DELAY_MS="${DMSNAP_BENCH_DELAY_MS:-}" DMSNAP_BENCH_W2_DELAY_MS="${DMSNAP_BENCH_W2_DELAY_MS:-}" DMSNAP_BENCH_SMOKE="${DMSNAP_BENCH_SMOKE:-}" DMSNAP_BENCH_PROFILE="${DMSNAP_BENCH_PROFILE:-}" DMSNAP_BENCH_ONLY="${DMSNAP_BENCH_ONLY:-}" DMSNAP_MODULE_KO="${DMSNAP_MODULE_KO:-}" DMSNAP_TIMEOUT_FACTOR="${DMSNAP_TIMEOUT_FACTOR:-1}" \
			"$TOP/tests/harness/guest-run.sh" "$RES" "$RES/tests-$shard-$boot.list" > "$console" 2>&1 < /dev/null &
		vm=$!
		started=$(date +%s)
		killed=""
		while kill -0 "$vm" 2>/dev/null; do
			sleep 2
			now=$(date +%s)
			current=""
			for t in "${remaining[@]}"; do
				n=$(name_of "$t")
				if [ -f "$RES/$n.started" ] && [ ! -f "$RES/$n.rc" ]; then current=$n; fi
			done
			if [ -n "$current" ]; then
				limit=$(($(cat "$RES/$current.started") + HANG_GRACE))
				age=$((now - $(stat -c %Y "$RES/$current.started")))
				if [ "$age" -gt "$limit" ]; then
					killed="$current: no result after ${age}s (guest hung)"
				fi
			else
				progress=0
				for t in "${remaining[@]}"; do
					[ -f "$RES/$(name_of "$t").started" ] && progress=1
				done
				if [ "$progress" -eq 0 ] && [ $((now - started)) -gt "$BOOT_GRACE" ]; then
					killed="guest did not start the tests within ${BOOT_GRACE}s"
				fi
			fi
			if [ -n "$killed" ]; then
				log "killing guest $shard: $killed"
				kill -TERM -- "-$vm" 2>/dev/null
				sleep 2
				kill -KILL -- "-$vm" 2>/dev/null
				break
			fi
		done
		wait "$vm" 2>/dev/null || true


		next=()
		progress=0
		for t in "${remaining[@]}"; do
			n=$(name_of "$t")
			if [ -f "$RES/$n.rc" ]; then
				progress=1
				rc=$(cat "$RES/$n.rc")
				# Reports inside the test's C-store sections
				# (c_store_reports_begin/end in lib.sh) are counted, not failed.
				tlog=$(sed -n "/dmsnap-test: begin $n\$/,\$p" "$RES/$n.dmesg")
				splat=$(echo "$tlog" |
					sed '/dmsnap-test: c-store-reports begin/,/dmsnap-test: c-store-reports end/d' |
					grep -E -m3 "$SPLAT" || true)
				cfound=$(echo "$tlog" |
					sed -n '/dmsnap-test: c-store-reports begin/,/dmsnap-test: c-store-reports end/p' |
					grep -c -E "$SPLAT" || true)
				[ "$cfound" -eq 0 ] || echo "$cfound kernel reports of the C store" > "$RES/$n.c-reports"
				if [ -n "$splat" ]; then
					verdict "$n" FAIL "kernel reported: $(echo "$splat" | head -n1)"
				elif [ "$rc" -eq 0 ]; then
					verdict "$n" PASS
				elif [ "$rc" -eq 77 ]; then
					verdict "$n" SKIP "$(grep -m1 '^SKIP:' "$RES/$n.log" | sed 's/^SKIP: //')"
				elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
					verdict "$n" FAIL "timed out (status $rc)"
				else
					verdict "$n" FAIL "exit status $rc"
				fi
			elif [ -f "$RES/$n.started" ]; then
				progress=1
				splat=$(grep -E -m1 "$SPLAT" "$console" || true)
				verdict "$n" FAIL "no result: guest crashed or hung${splat:+ ($splat)}${killed:+; $killed}"
			else
				next+=("$t")
			fi
		done
		if [ "$progress" -eq 0 ]; then
			for t in "${next[@]}"; do
				verdict "$(name_of "$t")" FAIL "not run: the guest did not start it${killed:+ ($killed)} (see $console)"
			done
			next=()
		fi
		remaining=("${next[@]}")
	done
}

# Share the tests out: the costliest first, each to the guest with the
# least work so far.
vms=${DMSNAP_VMS:-$(($(nproc) >= 2 ? 2 : 1))}
[ "$vms" -ge 1 ] || vms=1
[ "$vms" -le ${#tests[@]} ] || vms=${#tests[@]}
declare -a load shard_tests
for ((k = 0; k < vms; k++)); do load[$k]=0; shard_tests[$k]=""; done
while read -r weight t; do
	best=0
	for ((k = 1; k < vms; k++)); do
		[ "${load[$k]}" -lt "${load[$best]}" ] && best=$k
	done
	load[$best]=$((load[best] + weight))
	shard_tests[$best]+="$t"$'\n'
done < <(for t in "${tests[@]}"; do echo "$(cost_of "$t") $t"; done | sort -rn -k1,1)

KDIR=${KDIR:-$("$TOP/scripts/kernel-dir.sh")}
export KDIR
# Under TCG a guest with two vCPUs runs a third slower than one with a
# single vCPU (vCPUs synchronise on every TLB flush), so guests that share
# the host's cores get one each. DEBUG_ATOMIC_SLEEP (and lockdep on the
# debug kernel) check atomic context and lock order whatever the number of
# CPUs, and the kernel is preemptible. DMSNAP_VM_CPUS overrides.
if [ "$vms" -gt 1 ]; then
	export DMSNAP_VM_CPUS=${DMSNAP_VM_CPUS:-1}
fi
log "guest test results: $RES ($vms guests, ${DMSNAP_VM_CPUS:-2} vCPU each, $(vm_accel "$KDIR"))"
pids=()
for ((k = 0; k < vms; k++)); do
	# In the order dealt: the costliest first, so that a guest that
	# finishes early has only short tests left to wait on.
	mapfile -t list < <(printf '%s' "${shard_tests[$k]}")
	run_shard "$((k + 1))" "${list[@]}" &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done

pass=0 failed=0 skipped=0
for t in "${tests[@]}"; do
	n=$(name_of "$t")
	if [ -f "$RES/$n.verdict" ]; then
		IFS=$'\t' read -r v reason < "$RES/$n.verdict"
	else
		v=FAIL reason="no verdict (harness error)"
	fi
	# A test may report cases of its own (KUnit): each counts as a test.
	if [ -s "$RES/$n.cases" ]; then
		while read -r cv c; do
			if [ "$cv" = PASS ]; then
				pass=$((pass + 1))
				echo "PASS $n/$c"
			else
				failed=$((failed + 1))
				echo "FAIL $n/$c: failed"
			fi
		done < "$RES/$n.cases"
		[ "$v" = PASS ] && continue
	fi
	extra=""
	[ -f "$RES/$n.c-reports" ] && extra=" ($(cat "$RES/$n.c-reports"))"
	case "$v" in
	PASS) pass=$((pass + 1)); echo "PASS $n$extra" ;;
	SKIP) skipped=$((skipped + 1)); echo "SKIP $n: $reason" ;;
	*)
		failed=$((failed + 1))
		echo "FAIL $n: $reason"
		[ -f "$RES/$n.log" ] && tail -n 15 "$RES/$n.log" | sed 's/^/    | /'
		# and the device-mapper lines the kernel logged during the test
		# (the file holds the guest's whole log), which say why a store
		# was invalidated or a table refused
		[ -f "$RES/$n.dmesg" ] && sed -n "/dmsnap-test: begin $n\$/,\$p" "$RES/$n.dmesg" |
			grep -E 'device-mapper|dm_snap' | tail -n 10 | sed 's/^/    | kernel: /'
		;;
	esac
done
# kmemleak, where the kernel has it: every guest that finished its list
# scanned for leaks at the end (guest-run.sh); none may be found.
scans=("$RES"/kmemleak-*)
if [ -e "${scans[0]}" ]; then
	leaks=$(cat "${scans[@]}" | grep -c '^unreferenced object' || true)
	if [ "$leaks" -eq 0 ]; then
		pass=$((pass + 1))
		echo "PASS kmemleak: no leak after the tests (${#scans[@]} guests scanned)"
	else
		failed=$((failed + 1))
		echo "FAIL kmemleak: $leaks unreferenced objects after the tests (${scans[*]})"
		cat "${scans[@]}" | head -n 40 | sed 's/^/    | /'
	fi
fi
echo "guest: $pass passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
