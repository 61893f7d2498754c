#!/usr/bin/env bash
# Crash replay of the C store (tests/harness/crash-replay-lib.sh,
# Documentation/crash-model.md), for comparison: the same workloads as
# crash-replay-ours.sh, over at least 500 points; the C store's losses are
# reported, named by point, and not judged, its subset states' losses too
# (Documentation/crash-model.md, "C losses"). Measured on the 2-core
# development machine under TCG: about 5 min beside our store's replay in
# another guest.
# timeout: 1200
# cost: 300
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/crash-replay-lib.sh"

in_store c run_store c

echo "--- results"
cat "$TMP/c.total" "$TMP/c.subsets-total"
cases=$DMSNAP_RESULTS/$DMSNAP_TEST_NAME.cases
read -r _ _ cpoints _ _ < "$TMP/c.total"
if [ "$cpoints" -ge 500 ]; then
	echo "PASS c-store-replayed" >> "$cases"
else
	echo "FAIL c-store-replayed" >> "$cases"
	fail "the C store: only $cpoints points (500 wanted)"
fi
