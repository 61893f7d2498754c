// SPDX-License-Identifier: GPL-2.0-only
//! snap_dump through the real binary: it never writes over its input.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::*;

#[test]
fn the_cow_device_itself_as_output_is_refused_and_kept() {
    let l = layout(1);
    let img = image(l, 1, 100, &kernel_order(l, 5));
    let dir = scratch("dump-same");
    let cow = dir.join("cow.img");
    write(&cow, &img);
    let link = dir.join("link.img");
    std::fs::hard_link(&cow, &link).unwrap();
    for out in [&cow, &link] {
        let o = run(DUMP, &["-o", s(out), s(&cow)]);
        assert_eq!(o.code, 2, "{}", o.stderr);
        assert!(
            o.stderr.contains("is the COW device itself"),
            "{}",
            o.stderr
        );
        assert!(std::fs::read(&cow).unwrap() == img, "the COW image changed");
    }
}

#[test]
fn a_block_device_as_output_is_refused() {
    let l = layout(1);
    let dir = scratch("dump-blockdev");
    let cow = dir.join("cow.img");
    write(&cow, image(l, 1, 100, &kernel_order(l, 5)));
    // A loop device with nothing attached (size 0): a block device node
    // that no write can harm, should the tool open it.
    let Some(dev) = (0..8).map(|n| format!("/dev/loop{n}")).find(|d| {
        use std::os::unix::fs::FileTypeExt;
        let size = std::fs::read_to_string(format!("/sys/block/{}/size", &d[5..]));
        std::fs::metadata(d).is_ok_and(|m| m.file_type().is_block_device())
            && size.is_ok_and(|s| s.trim() == "0")
    }) else {
        eprintln!("no detached loop device here; skipped");
        return;
    };
    let o = run(DUMP, &["-o", &dev, s(&cow)]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("is a block device"), "{}", o.stderr);
}

#[test]
fn a_good_dump_still_goes_to_a_new_or_existing_file() {
    let l = layout(1);
    let dir = scratch("dump-file");
    let cow = dir.join("cow.img");
    write(&cow, image(l, 1, 100, &kernel_order(l, 5)));
    let out = dir.join("d.xml");
    let o = run(DUMP, &["-o", s(&out), s(&cow)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let first = std::fs::read_to_string(&out).unwrap();
    assert!(first.contains("<snap_store"));
    // Over an existing file: replaced.
    write(&out, "old contents that are longer than nothing");
    let o = run(DUMP, &["-o", s(&out), s(&cow)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
}

#[test]
fn a_dump_given_as_cow_device_is_recognised_as_xml() {
    let l = layout(1);
    let dir = scratch("dump-xml");
    let d = dir.join("d.xml");
    write(&d, dump_text(l, 1, 100, &kernel_order(l, 5)));
    for tool in [CHECK, DUMP] {
        let o = run(tool, &[s(&d)]);
        assert_eq!(o.code, 1, "{}", o.stderr);
        let said = format!("{}{}", o.stdout, o.stderr);
        assert!(said.contains("this looks like XML"), "{said}");
    }
}

#[test]
fn quiet_keeps_notes_off_stderr_but_not_errors() {
    let l = layout(1);
    let dir = scratch("dump-quiet");
    let cow = dir.join("cow.img");
    // An invalid store: snap_dump notes that no exception is dumped.
    write(&cow, image(l, 0, 100, &[]));
    let o = run(DUMP, &[s(&cow)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("note:"), "{}", o.stderr);
    let q = run(DUMP, &["-q", s(&cow)]);
    assert_eq!(q.code, 0, "{}", q.stderr);
    assert_eq!(q.stderr, "");
    assert_eq!(q.stdout, o.stdout);
    let e = run(DUMP, &["-q", s(&dir.join("missing"))]);
    assert_eq!(e.code, 2);
    assert!(e.stderr.contains("missing"), "{}", e.stderr);
}
