#!/usr/bin/env bash
# Crash replay of our store (tests/harness/crash-replay-lib.sh,
# Documentation/crash-model.md): every workload replayed at every crash
# point must lose nothing and activate everywhere, over at least 500
# points; and the oracle's self-test, the same log without one commit's
# metadata write, must report the loss. The subset states of every log
# (Documentation/crash-model.md, "Subset states") must lose nothing either,
# and the subset model with one commit taken as a plain write must report
# a loss. Measured on the 2-core development machine under TCG: about 5 min
# beside the C store's replay in another guest.
# timeout: 1200
# cost: 300
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/crash-replay-lib.sh"

in_store ours run_store ours

echo "--- results"
cat "$TMP/ours.total" "$TMP/ours.subsets-total"
cases=$DMSNAP_RESULTS/$DMSNAP_TEST_NAME.cases
why=""
# verdict CASE WHY COMMAND...: the case passes when COMMAND succeeds;
# otherwise WHY joins the test's failure message.
verdict() {
	local name=$1 reason=$2
	shift 2
	if "$@"; then
		echo "PASS $name" >> "$cases"
	else
		echo "FAIL $name" >> "$cases"
		why+="$reason; "
	fi
}
# self_test_lost RESULT LABEL: the self-test replay reported a loss.
self_test_lost() {
	grep -q '^rc=3$' "$1" && grep -q "^LOST $2" "$1"
}
read -r _ _ points _ lost _ failed _ < "$TMP/ours.total"
read -r _ _ states _ slost _ < "$TMP/ours.subsets-total"
verdict ours-loses-nothing "our store: $points points (500 wanted), $lost lost, $failed failed activations" \
	test "$points" -ge 500 -a "$lost" -eq 0 -a "$failed" -eq 0
verdict oracle-fails-without-a-commit "self-test: the replay without a commit's metadata write reported no loss" \
	self_test_lost "$TMP/self-test.result" self-test
verdict ours-subsets-lose-nothing "our store: $states subset states, $slost lost" \
	test "$states" -gt 0 -a "$slost" -eq 0
verdict oracle-subsets-fail-with-a-commit-as-plain-write "subset self-test: the model with a commit as a plain write reported no loss" \
	self_test_lost "$TMP/subset-self-test.result" subset-self-test
[ -z "$why" ] || fail "${why%; }"
