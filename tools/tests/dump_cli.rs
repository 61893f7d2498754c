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
        expect_exit(
            DUMP,
            &["-o", s(out), s(&cow)],
            2,
            "is the COW device itself",
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
    expect_exit(DUMP, &["-o", &dev, s(&cow)], 2, "is a block device");
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
        expect_exit(tool, &[s(&d)], 1, "this looks like XML");
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

#[test]
fn repair_salvages_a_damaged_store_that_restore_writes_back_clean() {
    let l = layout(1);
    let all = kernel_order(l, 40);
    let cow_sectors = cow_sectors_for(l, &all, 4);
    let mut img = image(l, 1, cow_sectors, &all);
    // Record 3 of area 0 points past the device; record 5 of area 1
    // claims the COW chunk of record 0.
    put_record(&mut img, l, 0, 3, ex(all[3].old_chunk, 1 << 40));
    put_record(&mut img, l, 1, 5, ex(all[37].old_chunk, all[0].new_chunk));
    let dir = scratch("dump-repair");
    let cow = dir.join("cow.img");
    write(&cow, &img);
    let before = std::fs::metadata(&cow).unwrap().modified().unwrap();

    // A plain dump refuses the store; snap_check finds it broken.
    assert_eq!(run(DUMP, &[s(&cow)]).code, 1);
    assert_eq!(run(CHECK, &[s(&cow)]).code, 1);

    let fixed = dir.join("fixed.xml");
    let o = run(DUMP, &["--repair", "-o", s(&fixed), s(&cow)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("dropped area 0 record 3 (old_chunk")
            && o.stderr.contains("is beyond the end of the COW device")
            && o.stderr.contains("dropped area 1 record 5")
            && o.stderr.contains("belongs to an earlier record"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains(
            "kept 38 exceptions, dropped 2 records (1 breaks a rule, 1 COW chunk claimed twice)"
        ),
        "{}",
        o.stderr
    );
    // The input was only read.
    assert!(std::fs::read(&cow).unwrap() == img, "the COW image changed");
    assert_eq!(std::fs::metadata(&cow).unwrap().modified().unwrap(), before);

    // Written back in place (the data chunks stay where they are).
    let o = run(RESTORE, &["--force", "-i", s(&fixed), "-o", s(&cow)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = run(CHECK, &[s(&cow)]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let o = run(DUMP, &[s(&cow)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, std::fs::read_to_string(&fixed).unwrap());

    // -q: the dump alone.
    let o = run(DUMP, &["--repair", "-q", s(&cow)]);
    assert_eq!((o.code, o.stderr.as_str()), (0, ""));
}

#[test]
fn repair_of_an_invalid_snapshot_needs_its_flag_and_its_flags_need_repair() {
    let l = layout(1);
    let dir = scratch("dump-repair-invalid");
    let cow = dir.join("cow.img");
    write(&cow, image(l, 0, 100, &kernel_order(l, 5)));
    expect_exit(DUMP, &["--repair", s(&cow)], 1, "--salvage-invalid");
    let o = run(DUMP, &["--repair", "--salvage-invalid", s(&cow)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout.matches("<exception ").count(), 5);
    assert!(o.stderr.contains("the dump marks it valid"), "{}", o.stderr);
    for flag in ["--salvage-invalid", "--past-end-marker"] {
        let o = run(DUMP, &[flag, s(&cow)]);
        assert_eq!(o.code, 2, "{flag}: {}", o.stderr);
    }
}
