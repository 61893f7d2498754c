// SPDX-License-Identifier: GPL-2.0-only
//! Unit tests of the store: prepare, commit, dirty ranges, invalidation,
//! usage and merge, through [`Committer`] over an in-memory device.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::*;
use snap_format::*;
use std::cell::RefCell;

fn ex(old_chunk: u64, new_chunk: u64) -> Exception {
    Exception {
        old_chunk,
        new_chunk,
    }
}

fn lbs(b: u32) -> LogicalBlockSize {
    LogicalBlockSize::new(b).unwrap()
}

/// A new store of `sectors`-sector chunks writing `block`-byte blocks.
fn fresh(sectors: u32, block: u32) -> (Layout, Locked, TestCommitter) {
    let l = layout(sectors);
    let q = Queue::with_capacity(batch_capacity(l) as usize);
    let (s, c) =
        Committer::new_snapshot(l, lbs(block), vec![0xEEu8; l.chunk_bytes() as usize], q).unwrap();
    assert!(c.area().iter().all(|b| *b == 0));
    (l, Locked(RefCell::new(s)), c)
}

/// The whole-chunk write of area `area` at chunk `chunk` of a store of
/// 1-sector chunks.
fn whole(area: u64, chunk: u64) -> AreaWrite {
    AreaWrite {
        area,
        chunk,
        offset: 0,
        len: 512,
        sector: chunk,
        sectors: 1,
    }
}

/// Record `i` of chunk `chunk` on the device.
fn on_disk(d: &MemDev, l: Layout, chunk: u64, i: u32) -> Option<Exception> {
    read_exception(&d.img[chunk_range(l, chunk)], i)
}

const BIG: u64 = 1 << 30;

#[test]
fn new_store_starts_like_persistent_ctr() {
    let (l, s, c) = fresh(32, 512);
    let sh = s.get();
    assert!(sh.is_valid());
    assert_eq!(
        (sh.next_free(), sh.current_area(), sh.pending_count()),
        (2, 0, 0)
    );
    assert_eq!((c.current_area(), c.current_committed()), (0, 0));
    assert!(c.batch().is_empty());
    assert_eq!(c.dirty_range(), None);
    assert!(!c.cleanup_pending());
    assert_eq!(sh.header(), DiskHeader::new(true, l.chunk_size()));
    assert_eq!(
        sh.usage(BIG).unwrap(),
        Usage {
            total_sectors: BIG,
            sectors_allocated: 64,
            metadata_sectors: 64
        }
    );
}

#[test]
fn construction_refuses_bad_buffers_and_write_blocks() {
    let l = layout(1);
    let q = || Queue::with_capacity(32);
    assert!(matches!(
        Committer::new_snapshot(l, LogicalBlockSize::SECTOR, vec![0u8; 256], q()),
        Err(Error::BufferSize { .. })
    ));
    assert!(matches!(
        Committer::new_invalid(l, LogicalBlockSize::SECTOR, vec![0u8; 256], q()),
        Err(Error::BufferSize { .. })
    ));
    assert!(matches!(
        Committer::new_snapshot(l, lbs(1024), vec![0u8; 512], q()),
        Err(Error::InvalidBlockSize {
            bytes: 1024,
            max: 512
        })
    ));
    let r = ScanResult {
        current_area: 0,
        current_committed: 32,
        next_free: 2,
        exceptions: 0,
        warning: None,
    };
    assert!(matches!(
        Committer::from_scan(l, LogicalBlockSize::SECTOR, &r, vec![0u8; 512], q()),
        Err(Error::IndexOutOfArea { index: 32, .. })
    ));
    let r = ScanResult {
        current_committed: 0,
        ..r
    };
    assert!(matches!(
        Committer::from_scan(l, lbs(1024), &r, vec![0u8; 512], q()),
        Err(Error::InvalidBlockSize {
            bytes: 1024,
            max: 512
        })
    ));
}

#[test]
fn prepare_allocates_data_chunks_skipping_metadata() {
    let (l, s, _) = fresh(1, 512);
    let got: Vec<u64> = (0..70).map(|_| prepare(&s, BIG).unwrap()).collect();
    assert_eq!(got[0], 2);
    assert_eq!(got[31], 33);
    assert_eq!(got[32], 35); // 34 is area 1
    assert_eq!(got[63], 66);
    assert_eq!(got[64], 68); // 67 is area 2
    assert!(got.iter().all(|c| l.is_data_chunk(*c)));
    assert_eq!(s.get().pending_count(), 70);
}

#[test]
fn prepare_fails_with_enospc_at_the_device_end() {
    let (_, s, _) = fresh(2, 512);
    // 5 chunks of 2 sectors plus one sector: chunks 2, 3, 4 are usable.
    let cow = 5 * 2 + 1;
    assert_eq!(prepare(&s, cow), Ok(2));
    assert_eq!(prepare(&s, cow), Ok(3));
    assert_eq!(prepare(&s, cow), Ok(4));
    let e = prepare(&s, cow).unwrap_err();
    assert_eq!(
        e,
        Error::NoSpace {
            chunk: 5,
            cow_sectors: 11
        }
    );
    assert_eq!(e.errno(), errno::ENOSPC);
    assert_eq!((s.get().next_free(), s.get().pending_count()), (5, 3));
    // The COW device grew: allocation resumes.
    assert_eq!(prepare(&s, 12), Ok(5));
}

#[test]
fn commit_waits_while_others_are_pending_then_writes() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    let a = prepare(&s, BIG).unwrap();
    let b = prepare(&s, BIG).unwrap();
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(100, a), true, 0),
        Commit::Queued
    );
    assert!(d.ops.is_empty(), "nothing is written while one is pending");
    assert_eq!(c.current_committed(), 1);
    assert_eq!(c.batch().done, [0]);
    assert_eq!(c.dirty_range(), Some(0..512));
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(101, b), true, 1),
        Commit::Due
    );
    assert_eq!(d.ops, [Op::Write(whole(0, 1))]);
    assert_eq!(take_batch(&mut c), [0, 1]);
    assert!(c.batch().is_empty());
    assert_eq!(c.dirty_range(), None);
    assert_eq!((s.get().is_valid(), s.get().pending_count()), (true, 0));
    assert_eq!(on_disk(&d, l, 1, 0), Some(ex(100, 2)));
    assert_eq!(on_disk(&d, l, 1, 1), Some(ex(101, 3)));
    assert_eq!(on_disk(&d, l, 1, 2), Some(Exception::default()));
    assert!(d.reports.is_empty());
}

#[test]
fn filling_an_area_zeroes_the_next_one_writes_and_advances() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    d.img[chunk_range(l, 34)].fill(0xAA);
    let chunks: Vec<u64> = (0..32).map(|_| prepare(&s, BIG).unwrap()).collect();
    for (i, ch) in (0..).zip(&chunks[..31]) {
        // Still pending ones and room left: queued.
        assert_eq!(
            c.commit_exception(&s, &mut d, ex(*ch, *ch), true, i),
            Commit::Queued
        );
    }
    // One more prepared exception is pending, but the area fills: flush.
    let extra = prepare(&s, BIG).unwrap();
    assert_eq!(extra, 35);
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(0, chunks[31]), true, 31),
        Commit::Due
    );
    // C: zero_disk_area() of the next area first, then the area write.
    assert_eq!(
        d.ops,
        [Op::Zero(l.area_io(1).unwrap()), Op::Write(whole(0, 1))]
    );
    assert!(d.img[chunk_range(l, 34)].iter().all(|b| *b == 0));
    assert_eq!(on_disk(&d, l, 1, 31), Some(ex(0, 33)));
    assert_eq!(take_batch(&mut c), (0..32).collect::<Vec<u32>>());
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    assert!(c.area().iter().all(|b| *b == 0));
    assert_eq!(c.dirty_range(), None);
    let sh = s.get();
    assert!(sh.is_valid());
    assert_eq!((sh.current_area(), sh.pending_count()), (1, 1));
    assert_eq!(sh.usage(BIG).unwrap().metadata_sectors, 3);
    // The pending one lands in area 1.
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(5, extra), true, 32),
        Commit::Due
    );
    assert_eq!(d.ops[2..], [Op::Write(whole(1, 34))]);
    assert_eq!(on_disk(&d, l, 34, 0), Some(ex(5, 35)));
    assert_eq!(take_batch(&mut c), [32]);
}

#[test]
fn failed_zeroing_invalidates_and_skips_the_area_write() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    d.fail_zero = true;
    let chunks: Vec<u64> = (0..32).map(|_| prepare(&s, BIG).unwrap()).collect();
    let mut last = Commit::Queued;
    for (i, ch) in (0..).zip(chunks) {
        last = c.commit_exception(&s, &mut d, ex(1, ch), true, i);
    }
    assert_eq!(last, Commit::Due);
    assert_eq!(d.ops, [Op::Zero(l.area_io(1).unwrap())]);
    assert!(d.img[chunk_range(l, 1)].iter().all(|b| *b == 0));
    assert!(!s.get().is_valid());
    assert_eq!(take_batch(&mut c), (0..32).collect::<Vec<u32>>());
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    assert_eq!(s.get().current_area(), 1);
    // The next area's disk content is unknown: all of it is dirty.
    assert_eq!(c.dirty_range(), Some(0..512));
}

#[test]
fn failed_area_write_invalidates_and_keeps_the_range_dirty() {
    let (l, s, mut c) = fresh(8, 512);
    let mut d = new_dev(l, 10);
    d.fail_write = true;
    let ch = prepare(&s, BIG).unwrap();
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(1, ch), true, 0),
        Commit::Due
    );
    assert_eq!(
        d.ops,
        [Op::Write(AreaWrite {
            area: 0,
            chunk: 1,
            offset: 0,
            len: 512,
            sector: 8,
            sectors: 1
        })]
    );
    assert!(!s.get().is_valid());
    assert_eq!(take_batch(&mut c), [0]);
    assert_eq!(c.dirty_range(), Some(0..512));
    // An invalid store never writes its area again.
    d.fail_write = false;
    let ch = prepare(&s, BIG).unwrap();
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(2, ch), true, 1),
        Commit::Due
    );
    assert_eq!(d.ops.len(), 1);
    assert_eq!(take_batch(&mut c), [1]);
    assert_eq!(c.dirty_range(), Some(0..512));
    assert!(d.img[chunk_range(l, 1)].iter().all(|b| *b == 0));
}

#[test]
fn copy_error_invalidates_and_skips_the_write() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    let a = prepare(&s, BIG).unwrap();
    let b = prepare(&s, BIG).unwrap();
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(1, a), false, 0),
        Commit::Queued
    );
    assert!(!s.get().is_valid());
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(2, b), true, 1),
        Commit::Due
    );
    assert!(d.ops.is_empty());
    assert_eq!(take_batch(&mut c), [0, 1]);
    assert_eq!(s.get().pending_count(), 0);
}

#[test]
fn dirty_range_is_rounded_to_the_write_block() {
    let (l, s, mut c) = fresh(32, 4096); // 16 KiB chunk, 1024 per area
    let mut d = new_dev(l, 4);
    // Fill slots 0..300 (offset up to 4800), flushing each time.
    for i in 0..300u32 {
        let ch = prepare(&s, BIG).unwrap();
        assert_eq!(
            c.commit_exception(&s, &mut d, ex(1, ch), true, i),
            Commit::Due
        );
        let w = *writes(&d.ops).last().unwrap();
        let off = i * 16 / 4096 * 4096;
        assert_eq!((w.offset, w.len), (off, 4096), "slot {i}");
        assert_eq!(w.sector, 32 + u64::from(off / 512));
        assert_eq!(w.sectors, 8);
        assert_eq!(c.dirty_range(), None);
        take_batch(&mut c);
    }
    // Two commits in one flush across a block boundary: both blocks.
    for i in 300..(4096 * 2 / 16 - 1) {
        let ch = prepare(&s, BIG).unwrap();
        assert_eq!(
            c.commit_exception(&s, &mut d, ex(1, ch), true, i),
            Commit::Due
        );
        take_batch(&mut c);
    }
    assert_eq!(c.current_committed(), 511);
    let a = prepare(&s, BIG).unwrap();
    let b = prepare(&s, BIG).unwrap();
    let n = d.ops.len();
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(2, a), true, 0),
        Commit::Queued
    );
    assert_eq!(c.dirty_range(), Some(4096..8192));
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(3, b), true, 1),
        Commit::Due
    );
    assert_eq!(d.ops.len(), n + 1);
    let w = *writes(&d.ops).last().unwrap();
    assert_eq!((w.offset, w.len, w.sector, w.sectors), (4096, 8192, 40, 16));
    assert_eq!(c.dirty_range(), None);
    assert_eq!(on_disk(&d, l, 1, 511), Some(ex(2, a)));
    assert_eq!(on_disk(&d, l, 1, 512), Some(ex(3, b)));
    assert_eq!(d.img[chunk_range(l, 1)], *c.area());
}

#[test]
fn whole_chunk_write_block_reproduces_c_writes() {
    let (l, s, mut c) = fresh(8, 4096);
    let mut d = new_dev(l, 10);
    for i in 0..2 {
        let ch = prepare(&s, BIG).unwrap();
        assert_eq!(
            c.commit_exception(&s, &mut d, ex(1, ch), true, i),
            Commit::Due
        );
    }
    let full = AreaWrite {
        area: 0,
        chunk: 1,
        offset: 0,
        len: 4096,
        sector: 8,
        sectors: 8,
    };
    assert_eq!(d.ops, [Op::Write(full), Op::Write(full)]);
}

#[test]
fn commit_without_prepare_invalidates_and_is_reported() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    // The pending count would drop below zero: the store is invalid, the
    // completion due at once, and nothing written.
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(1, 2), true, 0),
        Commit::Due
    );
    assert_eq!(d.reports, [Error::CommitWithoutPrepare]);
    assert!(d.ops.is_empty());
    let sh = s.get();
    assert!(!sh.is_valid());
    assert_eq!(sh.pending_count(), 0);
    assert_eq!(take_batch(&mut c), [0]);
}

#[test]
fn refused_exceptions_are_consumed_and_fail_without_being_recorded() {
    for (bad, why) in [
        (ex(1, 0), "header chunk"),
        (ex(1, 34), "metadata chunk"),
        (ex(u64::MAX, 2), "old_chunk too large"),
    ] {
        let (l, s, mut c) = fresh(1, 512);
        let mut d = new_dev(l, 100);
        let _ = prepare(&s, BIG).unwrap();
        assert_eq!(
            c.commit_exception(&s, &mut d, bad, true, 7),
            Commit::Due,
            "{why}: the only pending exception ends the flush"
        );
        assert_eq!(d.reports.len(), 1, "{why}");
        assert!(d.reports[0].errno() > 0, "{why}");
        assert!(d.ops.is_empty(), "{why}: nothing written");
        assert!(!s.get().is_valid(), "{why}: the store is invalid");
        assert_eq!(s.get().pending_count(), 0, "{why}");
        assert_eq!(take_batch(&mut c), [7], "{why}");
        assert_eq!(c.current_committed(), 0, "{why}");
        assert!(c.area().iter().all(|b| *b == 0), "{why}: nothing recorded");
    }
}

#[test]
fn a_refused_commit_does_not_hold_back_the_flush_of_the_others() {
    // Two exceptions in flight; the first is refused. The second must end
    // the flush and complete both, not queue behind a pending count that
    // never drops (dm-snapshot's dtr would wait for ever).
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    let _a = prepare(&s, BIG).unwrap();
    let b = prepare(&s, BIG).unwrap();
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(1, 34), true, 0),
        Commit::Queued
    );
    assert_eq!(
        d.reports,
        [Error::NewChunkIsMetadata {
            area: 0,
            index: 0,
            new_chunk: 34,
            metadata_area: 1
        }]
    );
    assert_eq!(s.get().pending_count(), 1);
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(2, b), true, 1),
        Commit::Due
    );
    assert_eq!(take_batch(&mut c), [0, 1]);
    assert_eq!(s.get().pending_count(), 0);
    assert!(!s.get().is_valid());
    assert!(d.ops.is_empty());
}

#[test]
fn drop_snapshot_invalidates_and_returns_the_invalid_header() {
    let (l, s, mut c) = fresh(16, 512);
    let mut d = new_dev(l, 10);
    let h = s.with(|s| s.drop_snapshot());
    assert_eq!(h, DiskHeader::new(false, l.chunk_size()));
    assert!(!s.get().is_valid());
    assert_eq!(s.get().header(), h);
    // A commit after the drop no longer writes the area.
    let ch = prepare(&s, BIG).unwrap();
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(1, ch), true, 0),
        Commit::Due
    );
    assert!(d.ops.is_empty());
    assert_eq!(take_batch(&mut c), [0]);
}

#[test]
fn invalid_store_is_all_dirty_and_never_merges() {
    let l = layout(1);
    let (s, mut c) = Committer::new_invalid(
        l,
        LogicalBlockSize::SECTOR,
        vec![1u8; 512],
        Queue::with_capacity(32),
    )
    .unwrap();
    let s = Locked(RefCell::new(s));
    assert!(!s.get().is_valid());
    assert!(c.area().iter().all(|b| *b == 0));
    assert_eq!(c.dirty_range(), Some(0..512));
    let mut d = new_dev(l, 100);
    assert_eq!(c.prepare_merge(&s, &mut d), Ok(None));
    assert!(d.ops.is_empty());
}

// ----- merge -----

fn loaded(l: Layout, areas: &[Vec<Exception>], chunks: u64) -> (Locked, TestCommitter, MemDev) {
    let img = store_image(l, chunks, areas);
    let (s, c) = load(&img, l, LogicalBlockSize::SECTOR);
    (s, c, MemDev::new(img))
}

#[test]
fn merge_finds_the_run_of_consecutive_exceptions_backwards() {
    let l = layout(1);
    // old/new pairs: (10,2) (20,3) (21,4) (22,5)
    let es = vec![ex(10, 2), ex(20, 3), ex(21, 4), ex(22, 5)];
    let (s, mut c, mut d) = loaded(l, &[es], 100);
    let r = c.prepare_merge(&s, &mut d).unwrap().unwrap();
    assert_eq!(
        r,
        MergeRun {
            last_old_chunk: 22,
            last_new_chunk: 5,
            count: 3
        }
    );
    assert_eq!(
        (r.first_old_chunk(), r.first_new_chunk()),
        (Some(20), Some(3))
    );
    assert!(d.ops.is_empty(), "the area is in memory");
    // More than prepared, or zero, is refused and changes nothing.
    let before = c.area().to_vec();
    assert_eq!(
        c.commit_merge(&s, &mut d, 4),
        Err(Error::MergeCountInvalid {
            nr_merged: 4,
            prepared: 3
        })
    );
    assert_eq!(
        c.commit_merge(&s, &mut d, 0),
        Err(Error::MergeCountInvalid {
            nr_merged: 0,
            prepared: 3
        })
    );
    assert!(d.ops.is_empty());
    assert_eq!(c.area(), before);
    assert_eq!(c.current_committed(), 4);
    c.commit_merge(&s, &mut d, 2).unwrap();
    assert_eq!(d.ops, [Op::Write(whole(0, 1))]);
    assert_eq!(read_exception(c.area(), 2), Some(Exception::default()));
    assert_eq!(read_exception(c.area(), 3), Some(Exception::default()));
    assert_eq!(read_exception(c.area(), 1), Some(ex(20, 3)));
    assert_eq!(d.img[chunk_range(l, 1)], *c.area());
    assert_eq!(c.current_committed(), 2);
    assert_eq!(s.get().next_free(), 1 + 2 + 1);
    assert_eq!(c.dirty_range(), None);
    // (10,2) does not continue the run of (20,3): a run of 1.
    let r = c.prepare_merge(&s, &mut d).unwrap().unwrap();
    assert_eq!((r.last_old_chunk, r.last_new_chunk, r.count), (20, 3, 1));
}

#[test]
fn merge_steps_back_to_the_previous_area_after_the_current_empties() {
    let l = layout(1);
    let areas = in_order(l, 33, |k| 500 + k);
    let (s, mut c, mut d) = loaded(l, &areas, 200);
    assert_eq!((c.current_area(), c.current_committed()), (1, 1));
    let r = c.prepare_merge(&s, &mut d).unwrap().unwrap();
    assert_eq!((r.last_old_chunk, r.last_new_chunk, r.count), (532, 35, 1));
    c.commit_merge(&s, &mut d, 1).unwrap();
    assert_eq!(d.ops, [Op::Write(whole(1, 34))]);
    assert_eq!(
        (c.current_area(), c.current_committed(), s.get().next_free()),
        (1, 0, 35)
    );
    // Empty area: read area 0. A failed read leaves the store where it is.
    let io = l.area_io(0).unwrap();
    d.fail_read = true;
    assert_eq!(
        c.prepare_merge(&s, &mut d),
        Err(Error::ReadFailed {
            chunk: 1,
            errno: errno::EIO
        })
    );
    assert_eq!(d.ops[1..], [Op::Read(io)]);
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    assert_eq!(s.get().current_area(), 1);
    // Asking again repeats the read.
    d.fail_read = false;
    let r = c.prepare_merge(&s, &mut d).unwrap().unwrap();
    assert_eq!(d.ops[2..], [Op::Read(io)]);
    assert_eq!((r.last_old_chunk, r.last_new_chunk, r.count), (531, 33, 32));
    assert_eq!((c.current_area(), c.current_committed()), (0, 32));
    assert_eq!(s.get().current_area(), 0);
    assert_eq!(s.get().usage(BIG).unwrap().metadata_sectors, 2);
    c.commit_merge(&s, &mut d, 32).unwrap();
    assert_eq!(d.ops[3..], [Op::Write(whole(0, 1))]);
    assert!(d.img[chunk_range(l, 1)].iter().all(|b| *b == 0));
    assert_eq!((c.current_committed(), s.get().next_free()), (0, 2));
    assert_eq!(c.prepare_merge(&s, &mut d), Ok(None));
    assert_eq!(d.ops.len(), 4);
}

#[test]
fn merge_refuses_a_corrupt_previous_area() {
    let l = layout(1);
    let areas = in_order(l, 32, |k| k);
    let (s, mut c, mut d) = loaded(l, &areas, 200);
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    let base = chunk_range(l, 1).start;
    // The area changed on disk since activation: an end marker in it.
    clear_exception(&mut d.img[base..base + 512], 7).unwrap();
    assert_eq!(
        c.prepare_merge(&s, &mut d),
        Err(Error::UnexpectedEndMarker { area: 0, index: 7 })
    );
    assert_eq!(d.ops, [Op::Read(l.area_io(0).unwrap())]);
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    assert_eq!(s.get().current_area(), 1);
    // A new_chunk past the device (200 chunks).
    write_exception(&mut d.img[base..base + 512], 7, ex(1, 250)).unwrap();
    assert!(matches!(
        c.prepare_merge(&s, &mut d),
        Err(Error::NewChunkBeyondDevice { .. })
    ));
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    assert_eq!(s.get().current_area(), 1);
    // Repaired, it is accepted.
    write_exception(&mut d.img[base..base + 512], 7, ex(7, 9)).unwrap();
    let r = c.prepare_merge(&s, &mut d).unwrap().unwrap();
    assert_eq!((r.last_old_chunk, r.last_new_chunk, r.count), (31, 33, 32));
    assert_eq!((c.current_area(), c.current_committed()), (0, 32));
}

#[test]
fn commit_merge_needs_a_prepared_run_and_refusals_change_nothing() {
    let l = layout(1);
    let (s, mut c, mut d) = loaded(l, &[vec![ex(1, 2)]], 100);
    let before = (c.area().to_vec(), s.get());
    // Nothing prepared yet.
    assert_eq!(
        c.commit_merge(&s, &mut d, 1),
        Err(Error::MergeCountInvalid {
            nr_merged: 1,
            prepared: 0
        })
    );
    assert!(d.ops.is_empty());
    assert_eq!((c.area().to_vec(), s.get()), before);
    assert_eq!(c.current_committed(), 1);
    let r = c.prepare_merge(&s, &mut d).unwrap().unwrap();
    assert_eq!(r.count, 1);
    c.commit_merge(&s, &mut d, 1).unwrap();
    assert_eq!(d.ops.len(), 1);
    // The run is used up.
    assert_eq!(
        c.commit_merge(&s, &mut d, 1),
        Err(Error::MergeCountInvalid {
            nr_merged: 1,
            prepared: 0
        })
    );
    assert_eq!(d.ops.len(), 1);
    assert_eq!(c.prepare_merge(&s, &mut d), Ok(None));
}

#[test]
fn failed_merge_write_blocks_further_merging() {
    let l = layout(1);
    let (s, mut c, mut d) = loaded(l, &[vec![ex(1, 2), ex(2, 3)]], 100);
    let _ = c.prepare_merge(&s, &mut d).unwrap().unwrap();
    d.fail_write = true;
    assert_eq!(
        c.commit_merge(&s, &mut d, 2),
        Err(Error::WriteFailed {
            chunk: 1,
            errno: errno::EIO
        })
    );
    // Not reduced: the disk still has both exceptions.
    assert_eq!(c.current_committed(), 2);
    assert_eq!(s.get().next_free(), 4);
    assert_eq!(on_disk(&d, l, 1, 0), Some(ex(1, 2)));
    assert_eq!(on_disk(&d, l, 1, 1), Some(ex(2, 3)));
    // Even once the device works again, until reloaded.
    d.fail_write = false;
    let e = c.prepare_merge(&s, &mut d).unwrap_err();
    assert_eq!(e, Error::MergeCommitFailed);
    assert_eq!(e.errno(), errno::EIO);
    assert_eq!(c.commit_merge(&s, &mut d, 1), Err(Error::MergeCommitFailed));
    assert_eq!(d.ops.len(), 1);
}

/// A device that checks that no I/O is done with the shared state locked.
struct Unlocked<'a> {
    dev: MemDev,
    lock: &'a Locked,
}

impl Unlocked<'_> {
    fn check(&self) {
        assert!(
            self.lock.0.try_borrow_mut().is_ok(),
            "metadata I/O with the shared lock held"
        );
    }
}

impl MetadataIo for Unlocked<'_> {
    type Area = Vec<u8>;
    fn cow_sectors(&self) -> u64 {
        self.dev.cow_sectors()
    }
    fn read_area(&mut self, io: AreaIo, area: &mut Vec<u8>) -> Result<(), IoError> {
        self.check();
        self.dev.read_area(io, area)
    }
    fn write_area(&mut self, w: &AreaWrite, area: &Vec<u8>) -> Result<(), IoError> {
        self.check();
        self.dev.write_area(w, area)
    }
    fn zero_area(&mut self, io: AreaIo) -> Result<(), IoError> {
        self.check();
        self.dev.zero_area(io)
    }
    fn write_header(&mut self, header: DiskHeader) -> Result<(), IoError> {
        self.check();
        self.dev.write_header(header)
    }
    fn report(&mut self, error: &Error) {
        self.check();
        self.dev.report(error);
    }
}

#[test]
fn io_is_never_done_with_the_shared_lock_held() {
    // The kernel store keeps `Shared` behind a spinlock: the committer may
    // take it only for O(1) steps, never across a read, a write or a
    // zeroing (nor a report).
    let (l, s, mut c) = fresh(1, 512);
    let mut d = Unlocked {
        dev: new_dev(l, 100),
        lock: &s,
    };
    let chunks: Vec<u64> = (0..33).map(|_| prepare(&s, BIG).unwrap()).collect();
    for (i, ch) in (0..).zip(&chunks) {
        let _ = c.commit_exception(&s, &mut d, ex(500 + u64::from(i), *ch), true, i);
        let _ = take_batch(&mut c);
    }
    // A refusal is reported.
    let _ = prepare(&s, BIG).unwrap();
    let _ = c.commit_exception(&s, &mut d, ex(1, 0), true, 99);
    assert_eq!(d.dev.reports.len(), 1);
    assert_eq!((c.current_area(), c.current_committed()), (1, 1));
    // Merging back reads and checks area 0.
    let r = c.prepare_merge(&s, &mut d).unwrap().unwrap();
    c.commit_merge(&s, &mut d, r.count).unwrap();
    let r = c.prepare_merge(&s, &mut d).unwrap().unwrap();
    assert_eq!((r.count, c.current_area()), (32, 0));
    c.commit_merge(&s, &mut d, r.count).unwrap();
    let ops = &d.dev.ops;
    assert!(ops.iter().any(|op| matches!(op, Op::Zero(_))));
    assert!(ops.iter().any(|op| matches!(op, Op::Read(_))));
}

#[test]
fn batch_capacity_is_an_area_or_max_batch_whichever_is_smaller() {
    assert_eq!(batch_capacity(layout(1)), 32);
    assert_eq!(batch_capacity(layout(8)), 256);
    assert_eq!(batch_capacity(layout(256)), MAX_BATCH); // 128 KiB: 8192 per area
    assert_eq!(batch_capacity(layout(1 << 21)), MAX_BATCH);
    let (l, _, c) = fresh(1024, 512);
    assert_eq!(c.batch_limit(), MAX_BATCH);
    assert_eq!(c.with_batch_limit(0).batch_limit(), 1);
    let (_, _, c) = fresh(1024, 512);
    assert_eq!(
        c.with_batch_limit(u32::MAX).batch_limit(),
        l.exceptions_per_area()
    );
    let (_, _, c) = fresh(1, 512);
    assert_eq!(c.batch_limit(), 32);
}

#[test]
fn a_full_batch_is_written_while_other_exceptions_are_still_pending() {
    let (l, s, c) = fresh(1, 512);
    let mut c = c.with_batch_limit(2);
    let mut d = new_dev(l, 100);
    let a = prepare(&s, BIG).unwrap();
    let b = prepare(&s, BIG).unwrap();
    let x = prepare(&s, BIG).unwrap();
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(10, a), true, 0),
        Commit::Queued
    );
    // The second fills the batch: written though `x` is pending.
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(11, b), true, 1),
        Commit::Due
    );
    assert_eq!(d.ops, [Op::Write(whole(0, 1))]);
    assert_eq!(take_batch(&mut c), [0, 1]);
    assert_eq!(s.get().pending_count(), 1);
    assert!(s.get().is_valid());
    // The last one flushes as in C, into the same area.
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(12, x), true, 2),
        Commit::Due
    );
    assert_eq!(d.ops[1..], [Op::Write(whole(0, 1))]);
    assert_eq!(take_batch(&mut c), [2]);
    assert_eq!(c.current_committed(), 3);
    assert_eq!(on_disk(&d, l, 1, 2), Some(ex(12, x)));
}

#[test]
fn a_refusal_that_fills_the_batch_completes_it_at_once() {
    // With the batch full, the completions queued so far are due: the
    // store is invalid, so they fail without waiting for a write, and the
    // queue never needs to hold more than the limit.
    let (l, s, c) = fresh(1, 512);
    let mut c = c.with_batch_limit(2);
    let mut d = new_dev(l, 100);
    let a = prepare(&s, BIG).unwrap();
    let _b = prepare(&s, BIG).unwrap();
    let x = prepare(&s, BIG).unwrap();
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(10, a), true, 0),
        Commit::Queued
    );
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(1, 34), true, 1),
        Commit::Due
    );
    assert!(matches!(d.reports[..], [Error::NewChunkIsMetadata { .. }]));
    assert!(d.ops.is_empty());
    assert_eq!(take_batch(&mut c), [0, 1]);
    assert_eq!(s.get().pending_count(), 1);
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(12, x), true, 2),
        Commit::Due
    );
    assert_eq!(take_batch(&mut c), [2]);
    assert!(!s.get().is_valid());
    assert!(d.ops.is_empty());
}

#[test]
fn an_unqueued_completion_goes_through_the_pending_count() {
    let l = layout(1);
    let (s, mut c) = Committer::new_snapshot(
        l,
        LogicalBlockSize::SECTOR,
        area_buffer(l),
        Queue::with_capacity(1),
    )
    .unwrap();
    let s = Locked(RefCell::new(s));
    let mut d = new_dev(l, 100);
    let a = prepare(&s, 100).unwrap();
    let b = prepare(&s, 100).unwrap();
    let x = prepare(&s, 100).unwrap();
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(1, a), true, 0),
        Commit::Queued
    );
    // The second one's completion cannot be queued: the store is invalid,
    // its completion handed back, and one is still pending.
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(2, b), true, 1),
        Commit::Unqueued {
            done: 1,
            due: false
        }
    );
    assert_eq!(d.reports, [Error::CallbackQueueFull]);
    assert!(!s.get().is_valid());
    assert_eq!(s.get().pending_count(), 1);
    assert_eq!(c.batch().done, [0]);
    // The last pending one ends the flush: its completion and the first.
    assert_eq!(
        c.commit_exception(&s, &mut d, ex(3, x), true, 2),
        Commit::Unqueued { done: 2, due: true }
    );
    assert_eq!(take_batch(&mut c), [0]);
    assert_eq!(s.get().pending_count(), 0);
    assert!(d.ops.is_empty());
}

#[test]
fn create_zeroes_area_0_before_writing_the_header() {
    let l = layout(1);
    // A COW device with stale records where area 0 goes.
    let mut img = store_image(l, 20, &[vec![ex(1, 2), ex(2, 3)]]);
    img[..512].fill(0);
    let mut d = MemDev::new(img);
    let q = Queue::with_capacity(batch_capacity(l) as usize);
    let (s, c) = Committer::create(&mut d, l, LogicalBlockSize::SECTOR, area_buffer(l), q).unwrap();
    assert!(s.is_valid());
    assert_eq!((c.current_area(), c.current_committed()), (0, 0));
    assert_eq!(
        d.ops,
        vec![
            Op::Zero(l.area_io(0).unwrap()),
            Op::Header(DiskHeader::new(true, l.chunk_size())),
        ]
    );
    let (r, seen, _) = scan(&d.img, l).unwrap();
    assert!(seen.is_empty());
    assert_eq!(r.next_free, INITIAL_NEXT_FREE);
}

#[test]
fn create_fails_without_a_header_when_area_0_cannot_be_zeroed() {
    let l = layout(1);
    let q = || Queue::with_capacity(batch_capacity(l) as usize);
    let wb = LogicalBlockSize::SECTOR;
    let mut d = new_dev(l, 20);
    d.fail_zero = true;
    let err = Committer::create(&mut d, l, wb, area_buffer(l), q()).err();
    assert_eq!(err, Some(Error::NewStoreZeroFailed { errno: errno::EIO }));
    assert_eq!(d.ops, vec![Op::Zero(l.area_io(0).unwrap())]);
    assert_eq!(err.unwrap().to_string(), messages::ZERO_DISK_AREA_0_FAILED);

    let mut d = new_dev(l, 20);
    d.fail_header = true;
    let err = Committer::create(&mut d, l, wb, area_buffer(l), q()).err();
    assert_eq!(err, Some(Error::NewStoreHeaderFailed { errno: errno::EIO }));
    assert_eq!(err.unwrap().to_string(), messages::WRITE_HEADER_FAILED);

    // A bad buffer is refused before anything is written.
    let mut d = new_dev(l, 20);
    let err = Committer::create(&mut d, l, wb, vec![0u8; 100], q()).err();
    assert!(matches!(err, Some(Error::BufferSize { .. })));
    assert!(d.ops.is_empty());
}
