#!/usr/bin/env bash
# Run the guest tests (tests/guest/*.sh, or the ones named) in the VM and
# report each one. A test fails when it exits non-zero, when the kernel logs
# a BUG/WARNING/Oops/KASAN/hung-task report while it runs, or when it leaves
# no result because the guest crashed or hung: the host watches each test's
# deadline, kills a hung guest, and boots again for the tests after it.
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
log "guest test results: $RES"

# Patterns of a kernel in trouble.
SPLAT='BUG:|WARNING:|Oops|KASAN|UBSAN|Kernel panic|general protection fault|INFO: task .* blocked|rcu: .* stall|Unable to handle kernel'

BOOT_GRACE=${DMSNAP_BOOT_GRACE:-300}	# boot to first test start, seconds
HANG_GRACE=30				# past a test's own timeout

declare -A verdict reason
remaining=("${tests[@]}")
boot=0
while [ ${#remaining[@]} -gt 0 ]; do
	boot=$((boot + 1))
	console=$RES/console-$boot.log
	guest_cmd=("$TOP/tests/harness/guest-run.sh" "$RES")
	for t in "${remaining[@]}"; do guest_cmd+=("$t"); done
	setsid "$TOP/scripts/vm.sh" --rwdir "$RES" -- env DMSNAP_SELFTEST="${DMSNAP_SELFTEST:-}" \
		"${guest_cmd[@]}" > "$console" 2>&1 < /dev/null &
	vm=$!
	started=$(date +%s)
	killed=""
	while kill -0 "$vm" 2>/dev/null; do
		sleep 2
		now=$(date +%s)
		current=""
		for t in "${remaining[@]}"; do
			n=$(basename "$t" .sh)
			if [ -f "$RES/$n.started" ] && [ ! -f "$RES/$n.rc" ]; then current=$n; fi
		done
		if [ -n "$current" ]; then
			limit=$(($(cat "$RES/$current.started") + HANG_GRACE))
			age=$((now - $(stat -c %Y "$RES/$current.started")))
			if [ "$age" -gt "$limit" ]; then
				killed="$current: no result after ${age}s (guest hung)"
			fi
		elif ! ls "$RES"/*.started >/dev/null 2>&1 && [ $((now - started)) -gt "$BOOT_GRACE" ]; then
			killed="guest did not start the tests within ${BOOT_GRACE}s"
		fi
		if [ -n "$killed" ]; then
			log "killing the VM: $killed"
			kill -TERM -- "-$vm" 2>/dev/null
			sleep 2
			kill -KILL -- "-$vm" 2>/dev/null
			break
		fi
	done
	wait "$vm" 2>/dev/null || true
	grep -m1 -o 'booting .* with [a-z]*' "$console" | sed 's/^/    /' >&2 || true

	next=()
	progress=0
	for t in "${remaining[@]}"; do
		n=$(basename "$t" .sh)
		if [ -f "$RES/$n.rc" ]; then
			progress=1
			rc=$(cat "$RES/$n.rc")
			splat=$(sed -n "/dmsnap-test: begin $n\$/,\$p" "$RES/$n.dmesg" | grep -E -m3 "$SPLAT" || true)
			if [ -n "$splat" ]; then
				verdict[$n]=FAIL
				reason[$n]="kernel reported: $(echo "$splat" | head -n1)"
			elif [ "$rc" -eq 0 ]; then
				verdict[$n]=PASS
			elif [ "$rc" -eq 77 ]; then
				verdict[$n]=SKIP
				reason[$n]=$(grep -m1 '^SKIP:' "$RES/$n.log" | sed 's/^SKIP: //')
			else
				verdict[$n]=FAIL
				reason[$n]="exit status $rc"
				[ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && reason[$n]="timed out (status $rc)"
			fi
		elif [ -f "$RES/$n.started" ]; then
			progress=1
			verdict[$n]=FAIL
			splat=$(grep -E -m1 "$SPLAT" "$console" || true)
			reason[$n]="no result: guest crashed or hung${splat:+ ($splat)}${killed:+; $killed}"
		else
			next+=("$t")
		fi
	done
	if [ "$progress" -eq 0 ]; then
		for t in "${next[@]}"; do
			n=$(basename "$t" .sh)
			verdict[$n]=FAIL
			reason[$n]="not run: the guest did not start it${killed:+ ($killed)} (see $console)"
		done
		next=()
	fi
	remaining=("${next[@]}")
done

pass=0 failed=0 skipped=0
for t in "${tests[@]}"; do
	n=$(basename "$t" .sh)
	# A test may report cases of its own (KUnit): each counts as a test.
	if [ -s "$RES/$n.cases" ]; then
		while read -r v c; do
			if [ "$v" = PASS ]; then
				pass=$((pass + 1))
				echo "PASS $n/$c"
			else
				failed=$((failed + 1))
				echo "FAIL $n/$c: failed"
			fi
		done < "$RES/$n.cases"
		[ "${verdict[$n]}" = PASS ] && continue
	fi
	case "${verdict[$n]}" in
	PASS) pass=$((pass + 1)); echo "PASS $n" ;;
	SKIP) skipped=$((skipped + 1)); echo "SKIP $n: ${reason[$n]}" ;;
	*)
		failed=$((failed + 1))
		echo "FAIL $n: ${reason[$n]}"
		[ -f "$RES/$n.log" ] && tail -n 15 "$RES/$n.log" | sed 's/^/    | /'
		;;
	esac
done
echo "guest: $pass passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
