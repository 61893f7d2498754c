// SPDX-License-Identifier: GPL-2.0-only

//! `snap_dump --repair` on the hostile-image generator's damaged stores:
//! every kind of damage, each repair compared with a plain in-memory
//! salvage written from the rules, and each repaired store written back
//! with `snap_restore` and found clean by `snap_check` and loadable by the
//! format core's verdict.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;

use snap_format::read_exception;
use snap_format::write_exception;
use snap_format::BlockSizes;
use snap_format::Exception;
use snap_format::HeaderDecision;
use snap_testkit::hostile;
use snap_testkit::hostile::bases;
use snap_testkit::hostile::expect;
use snap_testkit::hostile::mutants;
use snap_testkit::hostile::Base;
use snap_testkit::hostile::Expected;
use snap_testkit::hostile::Mutation;
use snap_tools::check::check;
use snap_tools::check::CheckOptions;
use snap_tools::check::Verdict;
use snap_tools::header::read_device_header;
use snap_tools::io::MemIo;
use snap_tools::io::Op;
use snap_tools::progress::Progress;
use snap_tools::repair::repair;
use snap_tools::repair::DropReason;
use snap_tools::repair::Note;
use snap_tools::repair::RepairError;
use snap_tools::repair::RepairOptions;
use snap_tools::xml::DumpReader;

fn opts(salvage_invalid: bool, past_end_marker: bool) -> RepairOptions {
    RepairOptions {
        blocks: BlockSizes::SECTOR,
        salvage_invalid,
        past_end_marker,
    }
}

/// The salvage rules written plainly, holding everything in memory: the
/// records before the first end marker (or all of them past it), minus
/// those breaking a rule, claiming a COW chunk claimed before, or mapping
/// an origin chunk mapped again later; minus the last when the end marker
/// has no room. `None` when the header leaves nothing to salvage.
fn reference(image: &[u8], o: &RepairOptions) -> Option<Vec<Exception>> {
    let info = read_device_header(&MemIo::new(image.to_vec()), o.blocks).ok()?;
    let layout = match info.decision.ok()? {
        HeaderDecision::Valid(l) => l,
        HeaderDecision::Invalid(l) if o.salvage_invalid => l,
        _ => return None,
    };
    let cb = layout.chunk_bytes() as usize;
    let cow_chunks = layout.device_chunks(info.cow_sectors);
    let epa = layout.exceptions_per_area();
    let mut records = Vec::new();
    let mut used = HashSet::new();
    let mut ended = false;
    for area in 0.. {
        let chunk = layout.area_location(area).unwrap();
        if chunk >= cow_chunks {
            break;
        }
        let bytes = &image[chunk as usize * cb..][..cb];
        for index in 0..epa {
            let e = read_exception(bytes, index).unwrap();
            if e.new_chunk == 0 {
                ended = true;
            }
            if e == Exception::default() || (ended && !o.past_end_marker) {
                continue;
            }
            if layout
                .check_exception(area, index, e, Some(cow_chunks))
                .is_ok()
                && used.insert(e.new_chunk)
            {
                records.push(e);
            }
        }
        if ended && !o.past_end_marker {
            break;
        }
    }
    let last: HashMap<u64, usize> = records
        .iter()
        .enumerate()
        .map(|(i, e)| (e.old_chunk, i))
        .collect();
    let mut kept: Vec<Exception> = records
        .iter()
        .enumerate()
        .filter(|(i, e)| last[&e.old_chunk] == *i)
        .map(|(_, e)| *e)
        .collect();
    let n = kept.len() as u64;
    if n > 0
        && n.is_multiple_of(u64::from(epa))
        && layout.area_location(n / u64::from(epa)).unwrap() >= cow_chunks
    {
        kept.pop();
    }
    Some(kept)
}

struct Repaired {
    dump: Vec<u8>,
    kept: Vec<Exception>,
    notes: Vec<String>,
    dropped: Vec<DropReason>,
}

fn run_repair(io: &MemIo, o: &RepairOptions) -> Result<Repaired, RepairError> {
    let mut dump = Vec::new();
    let mut notes = Vec::new();
    let mut dropped = Vec::new();
    let summary = repair(io, o, &mut dump, &mut Progress::silent(), |n| {
        notes.push(n.to_string());
        if let Note::Dropped { reason, .. } = n {
            dropped.push(reason.clone());
        }
    })?;
    let mut reader = DumpReader::new(&dump[..]);
    let header = reader.read_header().unwrap();
    assert_eq!(header.valid, 1);
    let mut kept = Vec::new();
    while let Some(e) = reader.next_exception().unwrap() {
        kept.push(e);
    }
    assert_eq!(summary.kept, kept.len() as u64);
    assert_eq!(summary.dropped_total(), dropped.len() as u64);
    Ok(Repaired {
        dump,
        kept,
        notes,
        dropped,
    })
}

/// Writes `dump` back over a copy of `image` and returns the result.
fn write_back(image: &[u8], dump: &[u8]) -> Vec<u8> {
    hostile::write_back(image.to_vec(), dump)
        .unwrap_or_else(|e| panic!("restore of a repaired dump failed: {e}"))
}

/// The repaired store must be clean for `snap_check` and load with exactly
/// the exceptions kept.
fn assert_loads(image: &[u8], chunk_sectors: u32, kept: usize, what: &str) {
    let summary = check(
        &MemIo::new(image.to_vec()),
        &CheckOptions::default(),
        &mut Progress::silent(),
        |p| panic!("{what}: the repaired store has a problem: {}", p.message),
    )
    .unwrap();
    assert!(
        matches!(summary.verdict, Verdict::Valid(_)) && summary.errors + summary.warnings == 0,
        "{what}: {:?}",
        summary.verdict
    );
    match expect(image, chunk_sectors).unwrap() {
        Expected::Valid {
            exceptions,
            cleanup: false,
            ..
        } => assert_eq!(exceptions, kept as u64, "{what}"),
        other => panic!("{what}: the module would not load the repaired store: {other}"),
    }
}

#[test]
fn every_kind_of_damage_is_salvaged_as_the_rules_say_and_loads_clean() {
    let bases = bases().unwrap();
    let all = mutants(&bases, Mutation::ALL.len() * bases.len() * 4, 5);
    let mut salvaged: BTreeMap<&str, usize> = BTreeMap::new();
    let mut refused: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &all {
        let chunk = bases
            .iter()
            .find(|b| b.name == m.base)
            .unwrap()
            .layout
            .chunk_sectors();
        for o in [
            opts(false, false),
            opts(false, true),
            opts(true, false),
            opts(true, true),
        ] {
            let what = format!("{m} with {o:?}");
            let io = MemIo::new(m.bytes.clone());
            let want = reference(&m.bytes, &o);
            match run_repair(&io, &o) {
                Ok(r) => {
                    assert_eq!(Some(&r.kept), want.as_ref(), "{what}: {:?}", r.notes);
                    let repaired = write_back(&m.bytes, &r.dump);
                    assert_loads(&repaired, chunk, r.kept.len(), &what);
                    // Data chunks are not touched: only the header and
                    // metadata areas differ from the damaged image.
                    assert_eq!(repaired.len(), m.bytes.len(), "{what}");
                    *salvaged.entry(m.kind.as_str()).or_default() += 1;
                }
                Err(e) => {
                    assert_eq!(want, None, "{what}: refused ({e}), the rules salvage");
                    *refused.entry(m.kind.as_str()).or_default() += 1;
                }
            }
            // The repair only reads: its input is unchanged.
            assert_eq!(io.data, m.bytes, "{what}");
            assert_eq!(io.bytes_written, 0, "{what}");
        }
    }
    let kinds: HashSet<_> = all.iter().map(|m| m.kind).collect();
    assert_eq!(kinds.len(), Mutation::ALL.len());
    assert!(Mutation::ALL.len() >= 30);
    // Only damage to the header's magic, version or chunk size leaves
    // nothing to salvage every time.
    for k in Mutation::ALL {
        let unsalvageable = matches!(
            k,
            Mutation::MagicField | Mutation::VersionField | Mutation::ZeroedHeader
        );
        assert_eq!(
            salvaged.contains_key(k.as_str()),
            !unsalvageable,
            "{k}: salvaged {salvaged:?}, refused {refused:?}"
        );
    }
}

fn base(i: usize) -> Base {
    bases().unwrap().swap_remove(i)
}

fn records(b: &Base) -> Vec<Exception> {
    run_repair(&MemIo::new(b.image.clone()), &opts(false, false))
        .unwrap()
        .kept
}

fn put(b: &Base, img: &mut [u8], area: u64, index: u32, e: Exception) {
    let cb = b.layout.chunk_bytes() as usize;
    let at = b.layout.area_location(area).unwrap() as usize * cb;
    write_exception(&mut img[at..at + cb], index, e).unwrap();
}

#[test]
fn an_undamaged_store_is_dumped_whole() {
    for b in bases().unwrap() {
        let r = run_repair(&MemIo::new(b.image.clone()), &opts(false, false)).unwrap();
        assert_eq!(r.kept.len() as u32, b.exceptions);
        assert!(r.dropped.is_empty(), "{:?}", r.notes);
    }
}

#[test]
fn an_end_marker_in_the_middle_ends_the_store_unless_told_to_go_past_it() {
    let b = base(2);
    let all = records(&b);
    let mut img = b.image.clone();
    put(&b, &mut img, 0, 10, Exception::default());
    let io = MemIo::new(img);
    let r = run_repair(&io, &opts(false, false)).unwrap();
    assert_eq!(r.kept, all[..10]);
    assert!(r
        .dropped
        .iter()
        .all(|d| matches!(d, DropReason::AfterEndMarker)));
    let r = run_repair(&io, &opts(false, true)).unwrap();
    let mut want = all.clone();
    want.remove(10);
    assert_eq!(r.kept, want);
    assert!(r.dropped.is_empty());
}

#[test]
fn an_invalid_snapshot_is_salvaged_only_when_asked() {
    let b = base(1);
    let mut img = b.image.clone();
    img[4..8].copy_from_slice(&0u32.to_le_bytes());
    let io = MemIo::new(img.clone());
    let e = run_repair(&io, &opts(false, false)).err().unwrap();
    assert!(matches!(e, RepairError::Invalid));
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("--salvage-invalid"));
    let r = run_repair(&io, &opts(true, false)).unwrap();
    assert_eq!(r.kept, records(&b));
    assert_loads(
        &write_back(&img, &r.dump),
        b.layout.chunk_sectors(),
        r.kept.len(),
        "invalid",
    );
}

#[test]
fn a_remapped_origin_chunk_keeps_its_last_mapping_and_a_taken_cow_chunk_its_first() {
    let b = base(0);
    let all = records(&b);
    let mut img = b.image.clone();
    // Record 3 maps record 40's origin chunk; record 50 claims record 5's
    // COW chunk.
    put(
        &b,
        &mut img,
        0,
        3,
        Exception {
            old_chunk: all[40].old_chunk,
            ..all[3]
        },
    );
    let epa = b.layout.exceptions_per_area() as usize;
    put(
        &b,
        &mut img,
        (50 / epa) as u64,
        (50 % epa) as u32,
        Exception {
            new_chunk: all[5].new_chunk,
            ..all[50]
        },
    );
    let r = run_repair(&MemIo::new(img), &opts(false, false)).unwrap();
    assert_eq!(
        r.dropped,
        [DropReason::NewChunkTaken, DropReason::OldChunkRemapped]
    );
    let mut want = all.clone();
    want.remove(50);
    want.remove(3);
    assert_eq!(r.kept, want);
    assert!(r
        .notes
        .iter()
        .any(|n| n.starts_with("dropped area 0 record 3 (old_chunk")));
}

#[test]
fn an_unreadable_area_ends_the_walk_or_is_skipped() {
    let b = base(2);
    let all = records(&b);
    let cb = u64::from(b.layout.chunk_bytes());
    let at = b.layout.area_location(0).unwrap() * cb;
    let io = MemIo::new(b.image.clone()).fail(Op::Read, at..at + 1);
    let r = run_repair(&io, &opts(false, false)).unwrap();
    assert!(r.kept.is_empty());
    assert!(r.notes.iter().any(|n| n.contains("could not be read")));
    let r = run_repair(&io, &opts(false, true)).unwrap();
    let epa = b.layout.exceptions_per_area() as usize;
    assert_eq!(r.kept, all[epa..]);
}

#[test]
fn records_filling_the_last_area_of_the_device_give_up_one_for_the_end_marker() {
    // base-4k: 8-sector chunks, 256 exceptions per area, 261 exceptions;
    // the device cut right before area 1, so that area 0 is full and the
    // end marker has nowhere to go.
    let b = base(2);
    let all = records(&b);
    let epa = b.layout.exceptions_per_area() as usize;
    let cb = b.layout.chunk_bytes() as usize;
    let end = b.layout.area_location(1).unwrap() as usize * cb;
    let img = b.image[..end].to_vec();
    let r = run_repair(&MemIo::new(img.clone()), &opts(false, false)).unwrap();
    assert!(r.notes.iter().any(|n| n.contains("beyond the device end")));
    assert_eq!(r.kept, all[..epa - 1]);
    assert_eq!(r.dropped, [DropReason::NoRoomForEndMarker]);
    assert_loads(
        &write_back(&img, &r.dump),
        b.layout.chunk_sectors(),
        epa - 1,
        "no room",
    );
}

/// A device whose area at `offset` fails its first read only, as a
/// device in trouble (or in use) can.
struct FailsOnce {
    inner: MemIo,
    offset: u64,
    failed: std::cell::Cell<bool>,
}

impl snap_tools::io::BlockIo for FailsOnce {
    fn size(&self) -> std::io::Result<u64> {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if offset == self.offset && !self.failed.replace(true) {
            return Err(std::io::Error::other("injected once"));
        }
        self.inner.read_at(offset, buf)
    }

    fn write_at(&mut self, _: u64, _: &[u8]) -> std::io::Result<()> {
        unreachable!("the repair writes nothing")
    }

    fn sync(&mut self) -> std::io::Result<()> {
        unreachable!("the repair writes nothing")
    }
}

#[test]
fn passes_that_read_other_records_than_the_first_leave_an_unclosed_dump() {
    // Area 1 maps an origin chunk of area 0 again, so the repair reads the
    // areas more than once; its first read of area 1 fails.
    let b = base(0);
    let all = records(&b);
    let epa = b.layout.exceptions_per_area() as usize;
    let mut img = b.image.clone();
    put(
        &b,
        &mut img,
        1,
        0,
        Exception {
            old_chunk: all[0].old_chunk,
            ..all[epa]
        },
    );
    let cb = u64::from(b.layout.chunk_bytes());
    let io = FailsOnce {
        inner: MemIo::new(img),
        offset: b.layout.area_location(1).unwrap() * cb,
        failed: std::cell::Cell::new(false),
    };
    let mut dump = Vec::new();
    let e = repair(
        &io,
        &opts(false, false),
        &mut dump,
        &mut Progress::silent(),
        |_| {},
    )
    .unwrap_err();
    assert!(matches!(e, RepairError::Changed), "{e}");
    assert_eq!(e.exit_code(), 2);
    assert!(!String::from_utf8_lossy(&dump).contains("</snap_store>"));
}
