// SPDX-License-Identifier: GPL-2.0-only
//! dump -> restore -> dump round trips through the real binaries, and
//! restored images compared byte for byte with images built directly from
//! the format core's encoders.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::*;
use snap_format::Exception;
use snap_format::Layout;

/// Restores `dump` to a new image, checks the image against the one the
/// module would have written, dumps it back (must be identical), restores
/// that dump again and dumps once more (identical again).
fn round_trip(name: &str, l: Layout, valid: u32, exceptions: &[Exception], spare: u64) {
    let dir = scratch(name);
    let cow = cow_sectors_for(l, exceptions, spare);
    let text = dump_text(l, valid, cow, exceptions);
    let d1 = dir.join("d1.xml");
    write(&d1, &text);
    let img = dir.join("img");
    let r = run(RESTORE, &["-i", s(&d1), "-o", s(&img)]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let bytes = std::fs::read(&img).unwrap();
    let expected = image(l, valid, cow, if valid == 0 { &[] } else { exceptions });
    assert_eq!(bytes.len(), expected.len());
    assert!(
        bytes == expected,
        "restored image differs from the module's layout"
    );

    let d = run(DUMP, &[s(&img)]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(d.stdout, text);

    let d2 = dir.join("d2.xml");
    write(&d2, &d.stdout);
    let img2 = dir.join("img2");
    let r = run(RESTORE, &["-i", s(&d2), "-o", s(&img2), "-q"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{}", r.stderr);
    let d = run(DUMP, &[s(&img2), "-o", s(&dir.join("d3.xml"))]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(std::fs::read_to_string(dir.join("d3.xml")).unwrap(), text);
}

#[test]
fn round_trip_is_identical_for_several_chunk_sizes() {
    // Small chunks over several areas; large chunks (big areas, so big
    // images) with a few exceptions.
    for (chunk, n) in [(1u32, 80u64), (2, 150), (8, 640), (32, 40), (128, 10)] {
        let l = layout(chunk);
        let exceptions = kernel_order(l, n);
        round_trip(&format!("chunk{chunk}"), l, 1, &exceptions, 3);
    }
}

#[test]
fn round_trip_of_exactly_full_areas_writes_a_zeroed_next_area() {
    let l = layout(1);
    for areas in [1u64, 2] {
        let exceptions = kernel_order(l, areas * 32);
        // No spare chunk: the device ends with the zeroed next area.
        round_trip(&format!("full{areas}"), l, 1, &exceptions, 0);
    }
}

#[test]
fn round_trip_of_an_empty_store() {
    round_trip("empty", layout(8), 1, &[], 0);
    round_trip("empty-spare", layout(32), 1, &[], 100);
}

#[test]
fn round_trip_of_an_invalid_store_keeps_valid_0_and_no_exception() {
    round_trip("invalid", layout(8), 0, &[], 10);
}

#[test]
fn round_trip_keeps_an_odd_valid_flag() {
    let l = layout(2);
    round_trip("valid7", l, 7, &kernel_order(l, 5), 2);
}

#[test]
fn round_trip_keeps_out_of_order_and_sparse_new_chunks() {
    // Old kernels committed out of order; holes are allowed.
    let l = layout(1);
    let exceptions = [ex(10, 5), ex(11, 2), ex(12, 3), ex(0, 40)];
    round_trip("ooo", l, 1, &exceptions, 1);
}

#[test]
fn dump_of_an_image_written_like_the_module_restores_to_the_same_metadata() {
    // Image built by the test, with data in the data chunks: a restore
    // reproduces every metadata byte and leaves data chunks zero.
    let dir = scratch("module-image");
    let l = layout(4);
    let exceptions = kernel_order(l, 150);
    let cow = cow_sectors_for(l, &exceptions, 5);
    let mut img = image(l, 1, cow, &exceptions);
    let clean = img.clone();
    let cb = l.chunk_bytes() as usize;
    for e in &exceptions {
        let at = e.new_chunk as usize * cb;
        img[at..at + cb].fill(0xa5);
    }
    let p = dir.join("img");
    write(&p, &img);
    let c = run(CHECK, &["-q", s(&p)]);
    assert_eq!(c.code, 0);
    let d = run(DUMP, &[s(&p)]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(d.stdout, dump_text(l, 1, cow, &exceptions));
    let dp = dir.join("d.xml");
    write(&dp, &d.stdout);
    let out = dir.join("out");
    let r = run(RESTORE, &["-i", s(&dp), "-o", s(&out)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(std::fs::read(&out).unwrap() == clean);
}
