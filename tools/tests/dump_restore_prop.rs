// SPDX-License-Identifier: GPL-2.0-only
//! Property test of the dump format: arbitrary stores survive
//! dump -> restore -> dump byte for byte, and the restored image is the one
//! the module leaves.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;
use std::io::Cursor;

use common::*;
use proptest::prelude::*;
use snap_format::BlockSizes;
use snap_format::Exception;
use snap_tools::dump::dump;
use snap_tools::io::MemIo;
use snap_tools::progress::Progress;
use snap_tools::restore::restore;
use snap_tools::restore::RestoreOptions;

/// A store: chunk size, valid flag, exceptions (distinct origin chunks, COW
/// chunks in any order, as stores of old kernels have them) and spare
/// chunks at the end of the device.
fn stores() -> impl Strategy<Value = (u32, u32, Vec<Exception>, u64)> {
    (
        prop::sample::select(vec![1u32, 2, 8, 16]),
        prop::sample::select(vec![0u32, 1, 2]),
        prop::collection::btree_set(0u64..(1 << 40), 0..200),
        0u64..40,
    )
        .prop_flat_map(|(chunk, valid, olds, spare)| {
            let l = layout(chunk);
            let news: Vec<u64> = kernel_order(l, olds.len() as u64)
                .iter()
                .map(|e| e.new_chunk)
                .collect();
            let olds: Vec<u64> = olds
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            (
                Just(chunk),
                Just(valid),
                Just(olds),
                Just(news).prop_shuffle(),
                Just(spare),
            )
        })
        .prop_map(|(chunk, valid, olds, news, spare)| {
            let exceptions = olds
                .into_iter()
                .zip(news)
                .map(|(old_chunk, new_chunk)| ex(old_chunk, new_chunk))
                .collect();
            (chunk, valid, exceptions, spare)
        })
}

/// Restores `text` onto an empty image; returns the image.
fn restored(text: &str) -> Vec<u8> {
    let mut target = MemIo::new(Vec::new());
    restore(
        || Ok(Cursor::new(text.as_bytes())),
        &mut target,
        &RestoreOptions::default(),
        &mut Progress::silent(),
    )
    .unwrap();
    target.data
}

/// Dumps `image`.
fn dumped(image: Vec<u8>) -> String {
    let mut out = Vec::new();
    dump(
        &MemIo::new(image),
        BlockSizes::SECTOR,
        &mut out,
        &mut Progress::silent(),
    )
    .unwrap();
    String::from_utf8(out).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn dump_restore_dump_is_byte_for_byte((chunk, valid, exceptions, spare) in stores()) {
        let l = layout(chunk);
        let cow = cow_sectors_for(l, &exceptions, spare);
        // The module reads no exception of an invalid store, so its dump
        // has none.
        let kept: &[Exception] = if valid == 0 { &[] } else { &exceptions };
        let text = dump_text(l, valid, cow, kept);

        let first = restored(&text);
        prop_assert!(first == image(l, valid, cow, kept), "not the module's image");
        let again = dumped(first.clone());
        prop_assert_eq!(&again, &text);
        let second = restored(&again);
        prop_assert!(second == first, "the second restore differs");
        prop_assert_eq!(dumped(second), text);
    }
}
