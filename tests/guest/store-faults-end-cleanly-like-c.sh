#!/usr/bin/env bash
# I/O errors and failed allocations, with the kernel's fault injection
# (Documentation/design.md, "Faults"). fault_run fails, in turn, every bio
# to the COW device while a snapshot does one thing -- a new store's table
# load (area 0 zeroed, header written), commits, the commit that fills area
# 0 and the zeroing of area 1, a merge, a P overflow's invalid header --
# and every allocation (failslab, fail_page_alloc) of the table load of a
# new store and of a store with two areas of exceptions. After each point
# the devices are torn down and the COW device is loaded again without
# faults: the origin holds exactly what was written to it, the COW device
# loads (Invalid only if the snapshot was invalidated), a valid snapshot
# shows its old data, a merge completes, snap_check finds the COW clean,
# and a refused load wrote nothing. Hung tasks, KASAN, lockdep and WARNs
# fail the test through the harness; kmemleak is read after the suite.
# Every scenario runs on the C store and on ours: ours must pass every
# point, the C store's failures are reported for comparison. Measured on
# the 2-core development machine under TCG, one guest alone: 235 s (C 117
# s, ours 87 s of fault_run; about 330 points each).
# timeout: 1800
# cost: 160
. "$DMSNAP_HARNESS/lib.sh"

crash_bin fault_run
[ -d /sys/kernel/debug/fail_make_request ] || skip "kernel without FAIL_MAKE_REQUEST"
[ -e /proc/self/fail-nth ] || skip "kernel without FAULT_INJECTION_DEBUG_FS"

# DMSNAP_FAULT_SCENARIOS (default: all) limits the scenarios, like
# DMSNAP_FAULT_STORES below, for a slow debug kernel.
read -r -a SCENARIOS <<< "${DMSNAP_FAULT_SCENARIOS:-io-new io-commit io-next-area io-merge io-drop alloc-new alloc-load}"

run_store() {
	local store=$1 s rc
	make_ram_disks 2 1024
	dm_remove_all_on_exit
	for s in "${SCENARIOS[@]}"; do
		rc=0
		"$BIN/fault_run" "$s" "$store" /dev/ram0 /dev/ram1 > "$TMP/$store-$s.out" 2>&1 || rc=$?
		cp "$TMP/$store-$s.out" "$DMSNAP_RESULTS/$DMSNAP_TEST_NAME.$store-$s.out"
		grep -E '^(FAILED|fault )|invalidation lost' "$TMP/$store-$s.out" | head -n 20 || true
		[ "$rc" -ne 2 ] || { tail -n 5 "$TMP/$store-$s.out"; echo "fault $s: could not run"; }
		echo "$s $rc" >> "$TMP/$store.rc"
	done
}

: > "$TMP/c.rc"
: > "$TMP/ours.rc"
# The C store's kernel reports (a failed alloc_area() leaves the buffers it
# freed in place, and persistent_dtr() frees them again: "Trying to vfree()
# nonexistent vm area") are counted, not failed: our module is not loaded
# in that phase.
# DMSNAP_FAULT_STORES (default "c ours") limits the run, e.g. on a slow
# debug kernel.
STORES=${DMSNAP_FAULT_STORES:-}
STORES=${STORES:-c ours}
if [[ " $STORES " == *" c "* ]]; then
	c_store_reports_begin
	in_store c run_store c
	c_store_reports_end
	creports=$(dmesg | sed -n '/dmsnap-test: c-store-reports begin/,/dmsnap-test: c-store-reports end/p' |
		grep -E 'WARNING:|BUG:|KASAN' | sed 's/^\[[^]]*\] //; s/, CPU#.*//' | sort | uniq -c || true)
	[ -z "$creports" ] || { echo "--- kernel reports of the C store:"; echo "$creports"; }
fi
[[ " $STORES " != *" ours "* ]] || in_store ours run_store ours

cases=$DMSNAP_RESULTS/$DMSNAP_TEST_NAME.cases
why=""
echo "--- results (scenario, exit status of fault_run: 0 passed, 1 failed points, 2 could not run)"
paste "$TMP/c.rc" "$TMP/ours.rc" | awk '{ printf "%-14s c %s  ours %s\n", $1, $2, $4 }'
while read -r s rc; do
	if [ "$rc" -eq 0 ]; then
		echo "PASS ours-$s" >> "$cases"
	else
		echo "FAIL ours-$s" >> "$cases"
		why+="ours: $s; "
	fi
done < "$TMP/ours.rc"
# The C store is compared, not judged, unless the scenario could not run.
while read -r s rc; do
	if [ "$rc" -eq 2 ]; then
		echo "FAIL c-$s-ran" >> "$cases"
		why+="c: $s did not run; "
	else
		echo "PASS c-$s-ran" >> "$cases"
	fi
done < "$TMP/c.rc"
[ -z "$why" ] || fail "${why%; }"
