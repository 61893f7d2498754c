// SPDX-License-Identifier: GPL-2.0-only
//! snap_check on images with each kind of corruption: the report lines
//! (the format core's texts) and the exit status, through the real binary.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::*;
use snap_format::Layout;
use snap_format::SNAP_MAGIC;

/// A clean store: chunk 1 sector (32 exceptions per area), 40 exceptions
/// (area 0 full, 8 in area 1), 10 spare chunks.
fn clean() -> (Layout, u64, Vec<u8>) {
    let l = layout(1);
    let exceptions = kernel_order(l, 40);
    let cow = cow_sectors_for(l, &exceptions, 10);
    (l, cow, image(l, 1, cow, &exceptions))
}

fn check(name: &str, img: &[u8], args: &[&str]) -> Output {
    let dir = scratch(name);
    let p = dir.join("img");
    write(&p, img);
    let mut all: Vec<&str> = args.to_vec();
    all.push(s(&p));
    run(CHECK, &all)
}

fn set_u32(img: &mut [u8], at: usize, v: u32) {
    img[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Lines of the report that are problems.
fn problems(o: &Output) -> Vec<&str> {
    o.stdout
        .lines()
        .filter(|l| l.starts_with("error: ") || l.starts_with("warning: "))
        .collect()
}

#[test]
fn clean_store_exits_0_with_no_problem_and_a_summary() {
    let (_, _, img) = clean();
    let o = check("clean", &img, &[]);
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(problems(&o).is_empty());
    assert!(
        o.stdout.contains("40 exceptions in 2 metadata areas read"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("module: would load 40 exceptions, next_free 43"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("0 error(s), 0 warning(s)"));
}

#[test]
fn quiet_prints_nothing_and_keeps_the_exit_status() {
    let (_, _, mut img) = clean();
    assert_eq!(check("quiet0", &img, &["--quiet"]).stdout, "");
    set_u32(&mut img, 0, 0xdead_beef);
    let o = check("quiet1", &img, &["-q"]);
    assert_eq!((o.code, o.stdout.as_str(), o.stderr.as_str()), (1, "", ""));
}

#[test]
fn bad_magic_is_an_error_with_the_module_message() {
    let (_, _, mut img) = clean();
    set_u32(&mut img, 0, 0x1234_5678);
    let o = check("magic", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(problems(&o), ["error: Invalid or corrupt snapshot"]);
    assert!(o
        .stdout
        .contains("module: would refuse the device: Invalid or corrupt snapshot"));
}

#[test]
fn version_2_is_an_error() {
    let (_, _, mut img) = clean();
    set_u32(&mut img, 8, 2);
    let o = check("version", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["error: unable to handle snapshot disk version 2"]
    );
}

#[test]
fn chunk_size_0_is_not_a_power_of_2() {
    let (_, _, mut img) = clean();
    set_u32(&mut img, 12, 0);
    let o = check("chunk0", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["error: invalid on-disk chunk size 0: Chunk size is not a power of 2."]
    );
}

#[test]
fn chunk_size_12_is_not_a_power_of_2() {
    let (_, _, mut img) = clean();
    set_u32(&mut img, 12, 12);
    let o = check("chunk12", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["error: invalid on-disk chunk size 12: Chunk size is not a power of 2."]
    );
}

#[test]
fn chunk_size_2_pow_22_is_too_high() {
    let (_, _, mut img) = clean();
    set_u32(&mut img, 12, 1 << 22);
    let o = check("chunkbig", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["error: invalid on-disk chunk size 4194304: Chunk size is too high."]
    );
}

#[test]
fn chunk_size_below_the_given_block_size_is_refused() {
    let (_, _, img) = clean();
    let o = check("chunkbs", &img, &["--block-size", "4096"]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["error: invalid on-disk chunk size 1: Chunk size is not a multiple of device blocksize."]
    );
    let o = check("chunkbs-bad", &img, &["--block-size", "1000"]);
    assert_eq!(o.code, 2);
}

#[test]
fn invalid_flag_0_is_a_warning_and_nothing_is_scanned() {
    let (l, _, mut img) = clean();
    set_u32(&mut img, 4, 0);
    // The areas are not read for an invalid snapshot (as in the module).
    put_record(&mut img, l, 0, 0, ex(1, 1 << 50));
    let o = check("invalid0", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["warning: the snapshot is marked invalid (valid 0): the module loads it as invalid and reads no exception"]
    );
    assert!(o
        .stdout
        .contains("module: would load the snapshot as invalid"));
    let o = check("invalid0-ignore", &img, &["--ignore-non-fatal-errors"]);
    assert_eq!(o.code, 0);
}

#[test]
fn invalid_flag_other_than_0_or_1_is_a_warning() {
    let (_, _, mut img) = clean();
    set_u32(&mut img, 4, 7);
    let o = check("valid7", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["warning: header valid field is 7, neither 0 nor 1: the module treats it as valid"]
    );
}

#[test]
fn no_store_magic_0_is_a_warning() {
    let o = check("zero", &vec![0u8; 4096], &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["warning: the device holds no snapshot store (magic 0): the module would start a new, empty one"]
    );
}

#[test]
fn new_chunk_on_a_metadata_chunk_is_an_error() {
    let (l, _, mut img) = clean();
    let meta = l.area_location(1).unwrap();
    put_record(&mut img, l, 0, 3, ex(5000, meta));
    let o = check("meta", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        [format!(
            "error: exception 3 of area 0: new_chunk {meta} is the chunk of metadata area 1"
        )]
    );
}

#[test]
fn new_chunk_past_the_device_end_is_an_error() {
    let (l, cow, mut img) = clean();
    put_record(&mut img, l, 1, 2, ex(5000, cow));
    let o = check("past", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        [format!("error: exception 2 of area 1: new_chunk {cow} is beyond the end of the COW device ({cow} chunks)")]
    );
}

#[test]
fn old_chunk_beyond_any_device_is_an_error() {
    let (l, _, mut img) = clean();
    put_record(&mut img, l, 0, 0, ex(1 << 60, 2));
    let o = check("oldbig", &img, &[]);
    assert_eq!(o.code, 1);
    let p = problems(&o);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("error: exception 0 of area 0: old_chunk 1152921504606846976 is beyond"),
        "{p:?}"
    );
}

#[test]
fn duplicate_old_chunk_is_an_error() {
    let (l, _, mut img) = clean();
    put_record(&mut img, l, 1, 4, ex(777, 45));
    put_record(&mut img, l, 0, 9, ex(777, 11));
    let o = check("dupold", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["error: exception 4 of area 1: old_chunk 777 is also in an earlier exception"]
    );
    // The module does not look for duplicates: it would load the store.
    assert!(o.stdout.contains("module: would load 40 exceptions"));
    assert_eq!(check("dupold-skip", &img, &["--skip-duplicates"]).code, 0);
}

#[test]
fn duplicate_new_chunk_is_an_error() {
    let (l, _, mut img) = clean();
    // Record 5 of area 0 holds new_chunk 7; reuse it in area 1.
    put_record(&mut img, l, 1, 0, ex(123_456, 7));
    let o = check("dupnew", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["error: exception 0 of area 1: new_chunk 7 is also in an earlier exception"]
    );
}

#[test]
fn garbage_after_the_terminator_is_a_warning() {
    let (l, _, mut img) = clean();
    // Area 1 has 8 exceptions: its end marker is record 8.
    put_record(&mut img, l, 1, 12, ex(1, 0));
    put_record(&mut img, l, 1, 20, ex(0, 99));
    let o = check("garbage", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["warning: area 1: 2 nonzero exception records after the end marker at index 8 (first at 12) ignored and cleared"]
    );
    assert_eq!(
        check("garbage-ignore", &img, &["--ignore-non-fatal-errors"]).code,
        0
    );
}

#[test]
fn device_too_small_for_its_areas_is_an_error() {
    // Area 0 full and the device ends right after its data chunks: the
    // next area, which must hold the terminator, is missing.
    let l = layout(1);
    let exceptions = kernel_order(l, 32);
    let img = image(l, 1, 34, &exceptions);
    let o = check("small", &img, &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["error: metadata area 1 at chunk 34 is beyond the end of the COW device (34 chunks)"]
    );
}

#[test]
fn device_too_small_for_area_0_or_a_header_is_an_error() {
    let l = layout(8);
    // Header only: one chunk. Refused from the header, before anything of
    // the chunk size is read or allocated.
    let o = check("hdronly", &image(l, 1, 8, &[]), &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["error: on-disk chunk size 8 leaves no room for the header and metadata area 0 on a COW device of 8 sectors"]
    );
    let o = check("tiny", &[0x53, 0x6e, 0x41, 0x70, 1, 0], &[]);
    assert_eq!(o.code, 1);
    assert_eq!(
        problems(&o),
        ["error: the COW device has 6 bytes, too few to hold a snapshot header"]
    );
}

#[test]
fn unreadable_device_exits_2() {
    let dir = scratch("unreadable");
    let o = run(CHECK, &[s(&dir.join("missing"))]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("No such file"), "{}", o.stderr);
    // A directory opens but cannot be read.
    let o = run(CHECK, &[s(&dir)]);
    assert_eq!(o.code, 2);
    let o = run(CHECK, &["--json", s(&dir)]);
    assert_eq!(o.code, 2);
    assert!(o.stdout.contains("\"io_error\":"), "{}", o.stdout);
    assert!(o
        .stdout
        .trim_end()
        .ends_with("\"summary\":{\"exit_status\":2}}"));
}

#[test]
fn every_problem_is_reported_and_the_module_verdict_is_the_first() {
    let (l, cow, mut img) = clean();
    let meta = l.area_location(1).unwrap();
    put_record(&mut img, l, 0, 1, ex(9001, meta));
    put_record(&mut img, l, 0, 2, ex(9002, cow + 5));
    put_record(&mut img, l, 1, 3, ex(9003, 2));
    let o = check("many", &img, &[]);
    assert_eq!(o.code, 1);
    let p = problems(&o);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p[0].contains("exception 1 of area 0: new_chunk 34 is the chunk of metadata area 1"));
    assert!(p[1].contains("exception 2 of area 0: new_chunk"));
    assert!(p[2].contains("exception 3 of area 1: new_chunk 2 is also in an earlier exception"));
    assert!(o.stdout.contains(
        "module: would refuse the device: exception 1 of area 0: new_chunk 34 is the chunk of metadata area 1"
    ));
    assert!(
        o.stdout.contains("3 error(s), 0 warning(s)"),
        "{}",
        o.stdout
    );
}

#[test]
fn json_is_one_document_with_each_problem_and_a_summary() {
    let (l, _, mut img) = clean();
    put_record(&mut img, l, 1, 4, ex(777, 45));
    put_record(&mut img, l, 0, 9, ex(777, 11));
    put_record(&mut img, l, 1, 30, ex(1, 1));
    let o = check("json", &img, &["--json"]);
    assert_eq!(o.code, 1);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", o.stdout);
    assert!(lines[0].starts_with("{\"tool\":\"snap_check\",\"json_version\":1,\"device\":\""));
    assert!(lines[0].ends_with("\"problems\":["));
    // Duplicate origin chunks come after the problems of the scan: they are
    // found in passes of their own.
    assert!(lines[1].starts_with(
        "{\"severity\":\"warning\",\"kind\":\"garbage_after_end_marker\",\"area\":1,\"index\":30,"
    ));
    assert!(lines[1].ends_with("\"},"));
    assert_eq!(
        lines[2],
        "{\"severity\":\"error\",\"kind\":\"duplicate_old_chunk\",\"area\":1,\"index\":4,\"message\":\"exception 4 of area 1: old_chunk 777 is also in an earlier exception\"}"
    );
    assert!(lines[3].starts_with("],\"summary\":{\"cow_bytes\":"));
    assert!(lines[3].contains(&format!("\"magic\":{SNAP_MAGIC},\"valid\":1,\"version\":1,\"chunk_size\":1,\"exceptions_per_area\":32,\"areas\":2,\"exceptions\":40,\"errors\":1,\"warnings\":1,\"verdict\":\"valid\",\"verdict_message\":null,\"next_free\":46,\"exit_status\":1}}}}")), "{}", lines[3]);
}

#[test]
fn header_only_reads_no_area() {
    let l = layout(1);
    let mut img = image(l, 1, 200, &kernel_order(l, 40));
    // A record the full check refuses: past the device.
    put_record(&mut img, l, 1, 2, ex(9, 100_000));
    let cow = scratch("header-only").join("cow.img");
    write(&cow, &img);
    let full = run(CHECK, &[s(&cow)]);
    assert_eq!(full.code, 1, "{}", full.stdout);
    let o = run(CHECK, &["--header-only", s(&cow)]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("header only: the areas were not read"),
        "{}",
        o.stdout
    );
    let j = run(CHECK, &["--header-only", "--json", s(&cow)]);
    assert!(
        j.stdout.contains("\"verdict\":\"header_valid\""),
        "{}",
        j.stdout
    );
    assert!(j.stdout.contains("\"areas\":0"), "{}", j.stdout);
    // A bad header is still found.
    img[0] = b'X';
    write(&cow, &img);
    assert_eq!(run(CHECK, &["--header-only", s(&cow)]).code, 1);
}

#[test]
fn a_shrunk_cow_is_told_the_size_it_needs_as_the_module_says() {
    // 40 exceptions at 512-byte chunks: area 1 (chunk 34) holds 8, the
    // last at chunk 42. Cut the device after chunk 39.
    let (_, _, img) = clean();
    let o = check("shrunk", &img[..40 * 512], &[]);
    assert_eq!(o.code, 1);
    assert!(
        o.stdout.contains(
            "module: would refuse the device: exception 5 of area 1: new_chunk 40 is beyond the end of the COW device (40 chunks); COW device of 40 sectors is too small for its exceptions: it must have 43 sectors or more to load"
        ),
        "{}",
        o.stdout
    );
}
