// SPDX-License-Identifier: GPL-2.0-only
//! The library over the in-memory backend: injected read, write and sync
//! errors reach the caller as I/O errors (exit status 2), and a restore
//! writes exactly the module's bytes.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::io::Cursor;

use common::*;
use snap_tools::check::check;
use snap_tools::check::CheckOptions;
use snap_tools::check::Kind;
use snap_tools::check::Verdict;
use snap_tools::dump::dump;
use snap_tools::dump::DumpError;
use snap_tools::io::BlockIo;
use snap_tools::io::MemIo;
use snap_tools::io::Op;
use snap_tools::progress::Progress;
use snap_tools::restore::restore;
use snap_tools::restore::RestoreError;
use snap_tools::restore::RestoreOptions;
use snap_tools::xml::DumpReader;

fn store() -> (snap_format::Layout, u64, Vec<u8>, String) {
    let l = layout(1);
    let exceptions = kernel_order(l, 70);
    let cow = cow_sectors_for(l, &exceptions, 4);
    (
        l,
        cow,
        image(l, 1, cow, &exceptions),
        dump_text(l, 1, cow, &exceptions),
    )
}

#[test]
fn check_of_an_unreadable_area_is_an_io_error() {
    let (l, _, img, _) = store();
    let area2 = l.area_location(2).unwrap() * 512;
    let io = MemIo::new(img).fail(Op::Read, area2..area2 + 1);
    let err = check(
        &io,
        &CheckOptions::default(),
        &mut Progress::silent(),
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("injected Read error"), "{err}");
    let io = MemIo::new(vec![0; 4096]).fail(Op::Read, 0..1);
    assert!(check(
        &io,
        &CheckOptions::default(),
        &mut Progress::silent(),
        |_| {}
    )
    .is_err());
}

#[test]
fn check_of_a_clean_store_reports_the_module_scan() {
    let (_, _, img, _) = store();
    let mut seen = Vec::new();
    let s = check(
        &MemIo::new(img),
        &CheckOptions::default(),
        &mut Progress::silent(),
        |p| seen.push(p.clone()),
    )
    .unwrap();
    assert!(seen.is_empty());
    assert_eq!((s.areas, s.exceptions, s.errors, s.warnings), (3, 70, 0, 0));
    let Verdict::Valid(r) = s.verdict else {
        panic!("{:?}", s.verdict)
    };
    assert_eq!(
        (r.current_area, r.current_committed, r.exceptions),
        (2, 6, 70)
    );
    assert_eq!(s.exit_code(false), 0);
}

#[test]
fn check_kinds_have_stable_names_and_severities() {
    assert_eq!(Kind::DuplicateNewChunk.as_str(), "duplicate_new_chunk");
    assert_eq!(Kind::GarbageAfterEndMarker.severity().as_str(), "warning");
    assert_eq!(Kind::AreaBeyondDevice.severity().as_str(), "error");
}

#[test]
fn dump_read_error_is_exit_2_and_bad_store_is_exit_1() {
    let (l, _, img, _) = store();
    let area1 = l.area_location(1).unwrap() * 512;
    let io = MemIo::new(img.clone()).fail(Op::Read, area1..area1 + 512);
    let mut out = Vec::new();
    let e = dump(
        &io,
        snap_format::BlockSizes::SECTOR,
        &mut out,
        &mut Progress::silent(),
    )
    .unwrap_err();
    assert!(matches!(e, DumpError::Read { chunk: 34, .. }), "{e:?}");
    assert_eq!(e.exit_code(), 2);

    let mut bad = img;
    put_record(&mut bad, l, 1, 0, ex(1, 1 << 40));
    let mut out = Vec::new();
    let e = dump(
        &MemIo::new(bad),
        snap_format::BlockSizes::SECTOR,
        &mut out,
        &mut Progress::silent(),
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(matches!(e, DumpError::Format(_)));
    // The exceptions before the fault were streamed, the closing tag not.
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 33);
    assert!(!text.contains("</snap_store>"));
}

#[test]
fn dump_output_error_is_exit_2() {
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::StorageFull.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (_, _, img, _) = store();
    let e = dump(
        &MemIo::new(img),
        snap_format::BlockSizes::SECTOR,
        &mut Full,
        &mut Progress::silent(),
    )
    .unwrap_err();
    assert!(matches!(e, DumpError::Output(_)));
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn restore_to_memory_writes_the_module_bytes_and_only_metadata() {
    let (_, cow, img, text) = store();
    let mut target = MemIo::new(Vec::new());
    let s = restore(
        || Ok(Cursor::new(text.as_bytes())),
        &mut target,
        &RestoreOptions::default(),
        &mut Progress::silent(),
    )
    .unwrap();
    assert_eq!((s.exceptions, s.areas, s.cow_sectors), (70, 3, cow));
    assert!(target.data == img);
    // Zeroed header chunk, 3 areas, header chunk: 5 chunks of 512 bytes.
    assert_eq!(target.bytes_written, 5 * 512);
    // The in-memory dump round trips too.
    let mut out = Vec::new();
    dump(
        &target,
        snap_format::BlockSizes::SECTOR,
        &mut out,
        &mut Progress::silent(),
    )
    .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), text);
}

#[test]
fn restore_write_or_sync_error_is_exit_2() {
    let (l, cow, _, text) = store();
    let area1 = l.area_location(1).unwrap() * 512;
    for fault in [
        (Op::Write, area1..area1 + 1),
        (Op::Sync, 0..0),
        (Op::Write, 0..1),
    ] {
        let mut target =
            MemIo::new(vec![0; usize::try_from(cow * 512).unwrap()]).fail(fault.0, fault.1);
        let e = restore(
            || Ok(Cursor::new(text.as_bytes())),
            &mut target,
            &RestoreOptions::default(),
            &mut Progress::silent(),
        )
        .unwrap_err();
        assert!(matches!(e, RestoreError::Target(_)), "{e:?}");
        assert_eq!(e.exit_code(), 2);
        // Whatever was written, the header is not that of a valid store.
        assert_ne!(&target.data[..4], b"SnAp");
    }
}

#[test]
fn restore_notices_a_dump_that_changed_between_the_passes() {
    let (_, cow, _, text) = store();
    let changed = text.replace("old_chunk=\"0\"", "old_chunk=\"1\"");
    assert_ne!(changed, text);
    let mut pass = 0;
    let mut target = MemIo::new(vec![0; usize::try_from(cow * 512).unwrap()]);
    let e = restore(
        || {
            pass += 1;
            Ok(Cursor::new(if pass == 1 {
                text.clone()
            } else {
                changed.clone()
            }))
        },
        &mut target,
        &RestoreOptions::default(),
        &mut Progress::silent(),
    )
    .unwrap_err();
    assert!(matches!(e, RestoreError::Changed), "{e:?}");
    assert_ne!(&target.data[..4], b"SnAp");
}

#[test]
fn restore_keeps_a_fixed_size_target_and_refuses_another_size() {
    struct Fixed(MemIo);
    impl BlockIo for Fixed {
        fn size(&self) -> std::io::Result<u64> {
            self.0.size()
        }
        fn read_at(&self, o: u64, b: &mut [u8]) -> std::io::Result<()> {
            self.0.read_at(o, b)
        }
        fn write_at(&mut self, o: u64, b: &[u8]) -> std::io::Result<()> {
            self.0.write_at(o, b)
        }
        fn sync(&mut self) -> std::io::Result<()> {
            self.0.sync()
        }
    }
    let (_, cow, _, text) = store();
    // A "block device" larger than the dump's COW: its own size wins.
    let mut dev = Fixed(MemIo::new(vec![
        0;
        usize::try_from((cow + 50) * 512).unwrap()
    ]));
    let s = restore(
        || Ok(Cursor::new(text.as_bytes())),
        &mut dev,
        &RestoreOptions::default(),
        &mut Progress::silent(),
    )
    .unwrap();
    assert_eq!(s.cow_sectors, cow + 50);
    assert_eq!(s.header.cow_sectors, cow);
    let opts = RestoreOptions {
        size_sectors: Some(cow),
        force: true,
        ..RestoreOptions::default()
    };
    let e = restore(
        || Ok(Cursor::new(text.as_bytes())),
        &mut dev,
        &opts,
        &mut Progress::silent(),
    )
    .unwrap_err();
    assert!(matches!(e, RestoreError::SizeMismatch { .. }), "{e:?}");
}

#[test]
fn reader_reports_lines_and_stops_at_the_root_end() {
    let text = "<snap_store dump_version=\"1\" disk_version=\"1\" valid=\"1\" chunk_size=\"1\" cow_sectors=\"9\">\n\n  <exception old_chunk=\"1\" new_chunk=\"2\"/>\n</snap_store>\n";
    let mut r = DumpReader::new(Cursor::new(text));
    let h = r.read_header().unwrap();
    assert_eq!((h.chunk_size, h.cow_sectors, h.valid), (1, 9, 1));
    assert_eq!(r.next_exception().unwrap(), Some(ex(1, 2)));
    assert_eq!(r.line(), 3);
    assert_eq!(r.next_exception().unwrap(), None);
    assert_eq!(r.next_exception().unwrap(), None);
    let big = text.replace("old_chunk=\"1\"", "old_chunk=\"18446744073709551616\"");
    let mut r = DumpReader::new(Cursor::new(big));
    r.read_header().unwrap();
    let e = r.next_exception().unwrap_err().to_string();
    assert!(e.starts_with("line 3: old_chunk=\"18446744073709551616\" is not an unsigned decimal number of 64 bits"), "{e}");
}

#[test]
fn reader_gives_the_same_exceptions_and_lines_whatever_its_buffer() {
    // Canonical elements (read in place when the buffer holds them whole),
    // others (the general parser), comments and blank lines, then an error.
    let mut text = String::from(
        "<snap_store dump_version=\"1\" disk_version=\"1\" valid=\"1\" chunk_size=\"1\" cow_sectors=\"99\">\n",
    );
    let mut want = Vec::new();
    for i in 0..40u64 {
        let e = ex(i * 1_000_003, i + 2);
        match i % 4 {
            0 | 1 => {
                text += &format!(
                    "  <exception old_chunk=\"{}\" new_chunk=\"{}\"/>\n",
                    e.old_chunk, e.new_chunk
                )
            }
            2 => {
                text += &format!(
                    "\n<exception new_chunk='{}'  old_chunk=\"{}\" />\n",
                    e.new_chunk, e.old_chunk
                )
            }
            _ => {
                text += &format!(
                    "<!-- {i} -->\t<exception old_chunk=\"{}\" new_chunk=\"{}\"/>",
                    e.old_chunk, e.new_chunk
                )
            }
        }
        want.push((e, text.lines().count() as u64));
    }
    text += "\n  <exception old_chunk=\"x\" new_chunk=\"1\"/>\n";
    let bad_line = text.lines().count();
    for cap in [1, 7, 30, 64, 100, 4096] {
        let mut r = DumpReader::new(std::io::BufReader::with_capacity(cap, text.as_bytes()));
        r.read_header().unwrap();
        for (e, line) in &want {
            assert_eq!(r.next_exception().unwrap(), Some(*e), "capacity {cap}");
            assert_eq!(r.line(), *line, "capacity {cap}, {e:?}");
        }
        let err = r.next_exception().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("line {bad_line}: ")),
            "capacity {cap}: {err}"
        );
    }
}

#[test]
fn a_dump_asks_for_the_areas_ahead_along_the_prefetch_plan_once_each() {
    // 1-sector chunks: 32 exceptions per area; 3000 exceptions fill 94
    // areas, more than the read-ahead window.
    let l = layout(1);
    let all = kernel_order(l, 3000);
    let cow = cow_sectors_for(l, &all, 4);
    let io = MemIo::new(image(l, 1, cow, &all));
    let mut out = Vec::new();
    let s = dump(
        &io,
        snap_format::BlockSizes::SECTOR,
        &mut out,
        &mut Progress::silent(),
    )
    .unwrap();
    let advised = io.advised.borrow();
    let sector = |a: u64| l.area_io(a).unwrap().sector * 512;
    // While area a is read, areas up to a + 64 are asked for: every area
    // after area 0, in order, each once.
    let want: Vec<u64> = (1..=s.areas - 1 + snap_tools::dump::READ_AHEAD_AREAS)
        .map(sector)
        .collect();
    assert_eq!(*advised, want);
}

#[test]
fn a_scan_that_reads_the_built_areas_otherwise_refuses_the_dump_at_its_line() {
    // Not reachable from a dump (each record is checked before its area is
    // built), but refused like any bad dump: at its line, exit status 1.
    let e = RestoreError::ScanMismatch { line: 7 };
    assert_eq!(e.exit_code(), 1);
    assert_eq!(
        e.to_string(),
        "line 7: the module's scan reads the areas built from the dump otherwise than they were built"
    );
}
