// SPDX-License-Identifier: GPL-2.0-only
//! snap_restore through the real binary: it refuses to overwrite a valid
//! store, validates the whole dump before writing anything, reads the
//! documented dump syntax, and sizes image files.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

const HEAD: &str =
    "<snap_store dump_version=\"1\" disk_version=\"1\" valid=\"1\" chunk_size=\"1\" cow_sectors=\"100\">\n";

fn restore(
    name: &str,
    dump: &str,
    target: Option<&[u8]>,
    args: &[&str],
) -> (Output, std::path::PathBuf) {
    let dir = scratch(name);
    let d = dir.join("d.xml");
    write(&d, dump);
    let t = dir.join("target");
    if let Some(bytes) = target {
        write(&t, bytes);
    }
    let mut all = vec!["-i", s(&d), "-o", s(&t)];
    all.extend_from_slice(args);
    (run(RESTORE, &all), t)
}

/// Runs a restore of a bad dump onto an existing target of 100 sectors and
/// onto a missing one: both must fail with exit 1, leave the target
/// unchanged and create nothing; returns the error message.
fn refused(name: &str, dump: &str) -> String {
    refused_on(name, dump, 100)
}

/// [`refused`] with an existing target of `sectors` sectors.
fn refused_on(name: &str, dump: &str, sectors: usize) -> String {
    let before = vec![0x5au8; sectors * 512];
    let (o, t) = restore(name, dump, Some(&before), &[]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        std::fs::read(&t).unwrap() == before,
        "a bad dump wrote to the target"
    );
    let (o2, t2) = restore(&format!("{name}-new"), dump, None, &[]);
    assert_eq!(o2.code, 1, "{}", o2.stderr);
    assert!(!t2.exists(), "a bad dump left a file behind");
    assert_eq!(o.stderr, o2.stderr);
    o.stderr
}

/// A valid dump of 5 exceptions, written to `d.xml` in a fresh scratch
/// directory: the directory, the file and the text.
fn small_dump(name: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let l = layout(1);
    let dump = dump_text(l, 1, 100, &kernel_order(l, 5));
    let dir = scratch(name);
    let d = dir.join("d.xml");
    write(&d, &dump);
    (dir, d, dump)
}

fn dump_of(t: &Path) -> String {
    let d = run(DUMP, &[s(t)]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    d.stdout
}

#[test]
fn refuses_to_overwrite_a_valid_store_unless_forced() {
    let l = layout(1);
    let old = image(l, 1, 100, &kernel_order(l, 3));
    let dump = format!("{HEAD}  <exception old_chunk=\"9\" new_chunk=\"2\"/>\n</snap_store>\n");
    let (o, t) = restore("force", &dump, Some(&old), &[]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains(
            "holds a valid snapshot store (chunk size 1): not overwriting it without --force"
        ),
        "{}",
        o.stderr
    );
    assert!(std::fs::read(&t).unwrap() == old);

    let (o, t) = restore("force2", &dump, Some(&old), &["--force"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(dump_of(&t), dump);
}

#[test]
fn overwrites_an_invalid_store_or_other_data_without_force() {
    let l = layout(1);
    let dump = format!("{HEAD}</snap_store>\n");
    let (o, _) = restore("over-invalid", &dump, Some(&image(l, 0, 100, &[])), &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let (o, t) = restore("over-junk", &dump, Some(&[0xffu8; 100 * 512]), &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // Header and the terminator area rewritten; data chunks left alone.
    let bytes = std::fs::read(&t).unwrap();
    assert_eq!(&bytes[..4], b"SnAp");
    assert!(bytes[512..1024].iter().all(|b| *b == 0));
    assert!(bytes[1024..].iter().all(|b| *b == 0xff));
}

#[test]
fn a_dump_with_a_syntax_error_writes_nothing_and_names_the_line() {
    let e = refused("syntax", &format!("{HEAD}  <exception old_chunk=\"1\" new_chunk=\"2\"/>\n  <exception old_chunk=\"x\" new_chunk=\"3\"/>\n</snap_store>\n"));
    assert!(
        e.contains("line 3: old_chunk=\"x\" is not an unsigned decimal number"),
        "{e}"
    );
    let e = refused(
        "unknown-attr",
        &format!(
            "{HEAD}  <exception old_chunk=\"1\" new_chunk=\"2\" extra=\"1\"/>\n</snap_store>\n"
        ),
    );
    assert!(
        e.contains("line 2: unknown attribute extra of <exception>"),
        "{e}"
    );
    let e = refused(
        "missing-attr",
        &format!("{HEAD}  <exception old_chunk=\"1\"/>\n</snap_store>\n"),
    );
    assert!(
        e.contains("line 2: <exception> lacks attribute new_chunk"),
        "{e}"
    );
    let e = refused("unknown-elem", &format!("{HEAD}  <area/>\n</snap_store>\n"));
    assert!(
        e.contains("line 2: unexpected element <area> inside <snap_store>"),
        "{e}"
    );
    let e = refused("empty", "");
    assert!(e.contains("no <snap_store> element"), "{e}");
}

#[test]
fn a_truncated_dump_writes_nothing() {
    // What snap_dump leaves when it stops on a bad store: no closing tag.
    let e = refused(
        "truncated",
        &format!("{HEAD}  <exception old_chunk=\"1\" new_chunk=\"2\"/>\n"),
    );
    assert!(e.contains("input ends before </snap_store>"), "{e}");
    let e = refused(
        "cut-tag",
        &format!("{HEAD}  <exception old_chunk=\"1\" new_"),
    );
    assert!(e.contains("input ends inside an element"), "{e}");
    let e = refused(
        "after-root",
        &format!("{HEAD}</snap_store>\n<snap_store/>\n"),
    );
    assert!(e.contains("line 3: element after </snap_store>"), "{e}");
}

#[test]
fn a_dump_the_module_would_refuse_writes_nothing() {
    let bad_header = |attrs: &str| {
        format!("<snap_store dump_version=\"1\" {attrs} cow_sectors=\"100\">\n</snap_store>\n")
    };
    let e = refused(
        "dv2",
        &bad_header("disk_version=\"2\" valid=\"1\" chunk_size=\"1\""),
    );
    assert!(
        e.contains("line 1: unable to handle snapshot disk version 2"),
        "{e}"
    );
    let e = refused(
        "cs3",
        &bad_header("disk_version=\"1\" valid=\"1\" chunk_size=\"3\""),
    );
    assert!(
        e.contains("line 1: invalid on-disk chunk size 3: Chunk size is not a power of 2."),
        "{e}"
    );
    let e = refused("dump-version", "<snap_store dump_version=\"2\" disk_version=\"1\" valid=\"1\" chunk_size=\"1\" cow_sectors=\"100\">\n</snap_store>\n");
    assert!(e.contains("dump version 2 is not supported"), "{e}");

    // new_chunk 34 is metadata area 1 (chunk 1: 32 exceptions per area).
    let e = refused("meta", &format!("{HEAD}  <exception old_chunk=\"1\" new_chunk=\"2\"/>\n  <exception old_chunk=\"2\" new_chunk=\"34\"/>\n</snap_store>\n"));
    assert!(
        e.contains("line 3: exception 1 of area 0: new_chunk 34 is the chunk of metadata area 1"),
        "{e}"
    );
    let e = refused(
        "header-chunk",
        &format!("{HEAD}  <exception old_chunk=\"1\" new_chunk=\"0\"/>\n</snap_store>\n"),
    );
    assert!(
        e.contains("line 2: exception 0 of area 0: new_chunk 0 is the header chunk"),
        "{e}"
    );
    let e = refused(
        "beyond",
        &format!("{HEAD}  <exception old_chunk=\"1\" new_chunk=\"100\"/>\n</snap_store>\n"),
    );
    assert!(e.contains("line 2: exception 0 of area 0: new_chunk 100 is beyond the end of the COW device (100 chunks)"), "{e}");
    let e = refused("dup-old", &format!("{HEAD}  <exception old_chunk=\"1\" new_chunk=\"2\"/>\n  <exception old_chunk=\"1\" new_chunk=\"3\"/>\n</snap_store>\n"));
    assert!(
        e.contains("line 3: old_chunk 1 is also in an earlier exception"),
        "{e}"
    );
    let e = refused("dup-new", &format!("{HEAD}  <exception old_chunk=\"1\" new_chunk=\"2\"/>\n  <exception old_chunk=\"5\" new_chunk=\"2\"/>\n</snap_store>\n"));
    assert!(
        e.contains("line 3: new_chunk 2 is also in an earlier exception"),
        "{e}"
    );
    let e = refused("invalid-with-exceptions", "<snap_store dump_version=\"1\" disk_version=\"1\" valid=\"0\" chunk_size=\"1\" cow_sectors=\"100\">\n  <exception old_chunk=\"1\" new_chunk=\"2\"/>\n</snap_store>\n");
    assert!(
        e.contains("line 2: an invalid store (valid=\"0\") has no exceptions"),
        "{e}"
    );
}

#[test]
fn a_dump_whose_areas_do_not_fit_the_device_writes_nothing() {
    // 32 exceptions fill area 0 (chunks 1..=33); the terminator needs
    // area 1 at chunk 34, so 34 chunks are too few.
    let l = layout(1);
    let exceptions = kernel_order(l, 32);
    // An existing image keeps its size, so it is as small.
    let e = refused_on("nofit", &dump_text(l, 1, 34, &exceptions), 34);
    assert!(e.contains("metadata area 1 at chunk 34 is beyond the end of the COW device (34 chunks): the dump needs a larger COW device"), "{e}");
    // The same dump fits once --size gives room.
    let (o, t) = restore(
        "nofit-size",
        &dump_text(l, 1, 34, &exceptions),
        None,
        &["--size", "35s"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::metadata(&t).unwrap().len(), 35 * 512);
}

#[test]
fn the_reader_takes_any_whitespace_quotes_comments_and_attribute_order() {
    let dump = "<?xml version=\"1.0\"?>\n<!-- made by hand > with a bracket -->\n<snap_store cow_sectors='100' chunk_size = \"1\"\n   valid=\"1\" disk_version=\"1\" dump_version=\"1\" >\n\n<exception new_chunk=\"3\"\n old_chunk='7' />\n<!-- two -->  <exception old_chunk=\"8\" new_chunk=\"4\"/></snap_store>\n\n";
    let (o, t) = restore("lenient", dump, None, &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let l = layout(1);
    assert_eq!(dump_of(&t), dump_text(l, 1, 100, &[ex(7, 3), ex(8, 4)]));
    // Line numbers stay right across multi-line elements and comments.
    let bad = dump.replace(
        "<exception old_chunk=\"8\" new_chunk=\"4\"/>",
        "<exception old_chunk=\"8\" new_chunk=\"-4\"/>",
    );
    let e = refused("lenient-bad", &bad);
    assert!(e.contains("line 8: new_chunk=\"-4\""), "{e}");
}

#[test]
fn a_new_image_is_sparse_and_sized_from_the_dump_or_size() {
    let l = layout(8);
    let exceptions = kernel_order(l, 600);
    // 1 GiB of COW device.
    let dump = dump_text(l, 1, 1 << 21, &exceptions);
    let (o, t) = restore("sparse", &dump, None, &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout
            .contains("wrote 600 exceptions in 3 areas (chunk size 8 sectors, valid 1)"),
        "{}",
        o.stdout
    );
    let m = std::fs::metadata(&t).unwrap();
    assert_eq!(m.len(), 1 << 30);
    // Header plus three areas: a few chunks, far from 1 GiB.
    assert!(
        m.blocks() * 512 < 1 << 20,
        "{} bytes allocated",
        m.blocks() * 512
    );
    let (o, t) = restore("sized", &dump, None, &["--size", "2g"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::metadata(&t).unwrap().len(), 2 << 30);
    assert!(dump_of(&t).contains("cow_sectors=\"4194304\""));
    let (o, _) = restore("badsize", &dump, None, &["--size", "1000"]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("not a whole number of 512-byte sectors"),
        "{}",
        o.stderr
    );
}

#[test]
fn an_unreadable_dump_exits_2_and_creates_nothing() {
    let dir = scratch("nodump");
    let t = dir.join("target");
    let o = run(RESTORE, &["-i", s(&dir.join("missing.xml")), "-o", s(&t)]);
    assert_eq!(o.code, 2);
    assert!(!t.exists());
}

#[test]
fn the_dump_itself_as_target_is_refused_and_kept() {
    let (dir, d, dump) = small_dump("same");
    // The same file under another name, too.
    let link = dir.join("link.xml");
    std::fs::hard_link(&d, &link).unwrap();
    for target in [&d, &link] {
        expect_exit(
            RESTORE,
            &["-i", s(&d), "-o", s(target), "--force"],
            2,
            "is the dump itself",
        );
        assert_eq!(std::fs::read_to_string(&d).unwrap(), dump);
    }
}

#[test]
fn a_fifo_as_dump_is_refused_before_the_target_is_touched() {
    let dir = scratch("fifo");
    let fifo = dir.join("dump.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let t = dir.join("target");
    // No writer ever opens the FIFO: a tool that opened it would hang, so
    // the run is bounded.
    let mut child = std::process::Command::new(RESTORE)
        .args(["-i", s(&fifo), "-o", s(&t)])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let status = status.expect("snap_restore hung on a FIFO");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(!t.exists(), "the target was created");
}

#[test]
fn an_existing_larger_image_is_never_shrunk_and_grows_only_when_asked() {
    let l = layout(1);
    let dump = dump_text(l, 1, 100, &kernel_order(l, 5));
    // 300 sectors of data where the dump's device had 100.
    let before: Vec<u8> = (0..300 * 512).map(|i| (i % 251) as u8).collect();
    let (o, t) = restore("noshrink", &dump, Some(&before), &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let after = std::fs::read(&t).unwrap();
    assert_eq!(after.len(), before.len(), "the image was resized");
    assert!(dump_of(&t).contains("cow_sectors=\"300\""));
    // Asking for less is refused, with nothing written.
    let (o, t) = restore("noshrink2", &dump, Some(&before), &["--size", "200s"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("300 sectors"), "{}", o.stderr);
    assert!(std::fs::read(&t).unwrap() == before);
    // Asking for more grows it.
    let (o, t) = restore("grow", &dump, Some(&before), &["--size", "400s"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::metadata(&t).unwrap().len(), 400 * 512);
    // A size that is not a whole number of sectors is kept, not cut.
    let odd = vec![0u8; 300 * 512 + 100];
    let (o, t) = restore("odd", &dump, Some(&odd), &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::metadata(&t).unwrap().len(), 300 * 512 + 100);
}

#[test]
fn a_cow_size_past_any_device_is_a_dump_error_with_its_line() {
    let dump = "<snap_store dump_version=\"1\" disk_version=\"1\" valid=\"1\" chunk_size=\"1\" \
                cow_sectors=\"18446744073709551615\">\n</snap_store>\n";
    let e = refused("hugecow", dump);
    assert!(
        e.contains("line 1: cow_sectors=\"18446744073709551615\" is larger than any block device"),
        "{e}"
    );
}

#[test]
fn a_huge_attribute_value_is_quoted_cut_short() {
    let dump = format!(
        "<snap_store dump_version=\"1\" disk_version=\"1\" valid=\"1\" chunk_size=\"{}\" \
         cow_sectors=\"100\">\n</snap_store>\n",
        "9".repeat(5000)
    );
    let e = refused("hugeattr", &dump);
    assert!(e.contains("... (5000 bytes)"), "{e}");
    assert!(e.len() < 300, "{} bytes of message", e.len());
}

#[test]
fn a_character_device_is_neither_dump_target_nor_cow() {
    let (_, d, _) = small_dump("chardev");
    let says = "a character device, not an image file or a block device";
    expect_exit(RESTORE, &["-i", s(&d), "-o", "/dev/null"], 2, says);
    for tool in [CHECK, DUMP] {
        expect_exit(tool, &["/dev/zero"], 2, says);
    }
}
