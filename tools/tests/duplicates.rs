// SPDX-License-Identifier: GPL-2.0-only
//! The bounded-memory duplicate finders against an exact set.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashSet;

use proptest::prelude::*;
use snap_tools::duplicates::NewChunks;
use snap_tools::duplicates::OldChunkFilter;

/// The repeats of `values` in order, as the finder reports them: `true`
/// for each value seen before.
fn exact(values: &[u64]) -> Vec<bool> {
    let mut seen = HashSet::new();
    values.iter().map(|v| !seen.insert(*v)).collect()
}

fn filtered(values: &[u64], max_exceptions: u64, pass_bytes: u64) -> Vec<bool> {
    let mut f = OldChunkFilter::with_pass_bytes(max_exceptions, pass_bytes);
    for v in values {
        f.feed(*v);
    }
    for pass in 0..f.start_second_passes() {
        for v in values {
            f.feed_again(pass, *v);
        }
        f.end_pass();
    }
    let mut d = f.finish();
    values.iter().map(|v| d.is_repeat(*v)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any values, with a bitmap from roomy to far too small (4 bits per
    /// value and less, so that most values share a bit) and second passes
    /// from one to one per candidate: exactly the repeats are found.
    #[test]
    fn old_chunk_filter_finds_exactly_the_repeats(
        mut values in prop::collection::vec(0u64..(1 << 56), 0..2000),
        repeats in prop::collection::vec((0usize..2000, 0usize..2000), 0..20),
        sizing in prop::sample::select(vec![1u64, 4, 64, 1 << 20]),
        pass_bytes in prop::sample::select(vec![8u64, 200, 1 << 24]),
    ) {
        for (from, to) in repeats {
            if from < values.len() && to < values.len() {
                values[to] = values[from];
            }
        }
        prop_assert_eq!(filtered(&values, sizing, pass_bytes), exact(&values));
    }

    #[test]
    fn new_chunks_find_exactly_the_repeats_on_the_device(
        values in prop::collection::vec(0u64..4000, 0..3000),
    ) {
        let mut set = NewChunks::new(4000);
        let found: Vec<bool> = values.iter().map(|v| !set.insert(*v)).collect();
        prop_assert_eq!(found, exact(&values));
        // A chunk far past the device is not kept (the rules refuse it).
        prop_assert!(set.insert(1 << 40));
        prop_assert!(set.insert(1 << 40));
    }
}
