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
read -r _ _ points _ lost _ failed _ < "$TMP/ours.total"
if [ "$points" -ge 500 ] && [ "$lost" -eq 0 ] && [ "$failed" -eq 0 ]; then
	echo "PASS ours-loses-nothing" >> "$cases"
else
	echo "FAIL ours-loses-nothing" >> "$cases"
	why+="our store: $points points (500 wanted), $lost lost, $failed failed activations; "
fi
if grep -q '^rc=3$' "$TMP/self-test.result" && grep -q '^LOST self-test' "$TMP/self-test.result"; then
	echo "PASS oracle-fails-without-a-commit" >> "$cases"
else
	echo "FAIL oracle-fails-without-a-commit" >> "$cases"
	why+="self-test: the replay without a commit's metadata write reported no loss; "
fi
read -r _ _ states _ slost _ < "$TMP/ours.subsets-total"
if [ "$states" -gt 0 ] && [ "$slost" -eq 0 ]; then
	echo "PASS ours-subsets-lose-nothing" >> "$cases"
else
	echo "FAIL ours-subsets-lose-nothing" >> "$cases"
	why+="our store: $states subset states, $slost lost; "
fi
if grep -q '^rc=3$' "$TMP/subset-self-test.result" && grep -q '^LOST subset-self-test' "$TMP/subset-self-test.result"; then
	echo "PASS oracle-subsets-fail-with-a-commit-as-plain-write" >> "$cases"
else
	echo "FAIL oracle-subsets-fail-with-a-commit-as-plain-write" >> "$cases"
	why+="subset self-test: the model with a commit as a plain write reported no loss; "
fi
[ -z "$why" ] || fail "${why%; }"
