// SPDX-License-Identifier: GPL-2.0-only
//! Unit tests of the store state: prepare, commit, dirty ranges,
//! invalidation, usage and merge.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::*;
use snap_format::*;

fn ex(old_chunk: u64, new_chunk: u64) -> Exception {
    Exception {
        old_chunk,
        new_chunk,
    }
}

fn lbs(b: u32) -> LogicalBlockSize {
    LogicalBlockSize::new(b).unwrap()
}

fn fresh(sectors: u32, block: u32) -> (Layout, Pstore, Vec<u8>) {
    let l = layout(sectors);
    let mut area = vec![0xEEu8; l.chunk_bytes() as usize];
    let s = Pstore::new_snapshot(l, lbs(block), &mut area).unwrap();
    assert!(area.iter().all(|b| *b == 0));
    (l, s, area)
}

const BIG: u64 = 1 << 30;

#[test]
fn new_store_starts_like_persistent_ctr() {
    let (l, s, _) = fresh(32, 512);
    assert!(s.is_valid());
    assert_eq!(
        (s.next_free(), s.current_area(), s.current_committed()),
        (2, 0, 0)
    );
    assert_eq!((s.pending_count(), s.callback_count()), (0, 0));
    assert_eq!(s.dirty_range(), None);
    assert_eq!(s.header(), DiskHeader::new(true, l.chunk_size()));
    assert_eq!(
        s.usage(BIG).unwrap(),
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
    let mut small = vec![0u8; 256];
    assert!(matches!(
        Pstore::new_snapshot(l, LogicalBlockSize::SECTOR, &mut small),
        Err(Error::BufferSize { .. })
    ));
    let mut area = vec![0u8; 512];
    assert_eq!(
        Pstore::new_snapshot(l, lbs(1024), &mut area),
        Err(Error::InvalidBlockSize { bytes: 1024 })
    );
    let r = ScanResult {
        current_area: 0,
        current_committed: 32,
        next_free: 2,
        exceptions: 0,
        warning: None,
    };
    assert!(matches!(
        Pstore::from_scan(l, LogicalBlockSize::SECTOR, &r, &mut area),
        Err(Error::IndexOutOfArea { index: 32, .. })
    ));
}

#[test]
fn prepare_allocates_data_chunks_skipping_metadata() {
    let (l, mut s, _) = fresh(1, 512);
    let got: Vec<u64> = (0..70).map(|_| s.prepare_exception(BIG).unwrap()).collect();
    assert_eq!(got[0], 2);
    assert_eq!(got[31], 33);
    assert_eq!(got[32], 35); // 34 is area 1
    assert_eq!(got[63], 66);
    assert_eq!(got[64], 68); // 67 is area 2
    assert!(got.iter().all(|c| l.is_data_chunk(*c)));
    assert_eq!(s.pending_count(), 70);
}

#[test]
fn prepare_fails_with_enospc_at_the_device_end() {
    let (_, mut s, _) = fresh(2, 512);
    // 5 chunks of 2 sectors plus one sector: chunks 2, 3, 4 are usable.
    let cow = 5 * 2 + 1;
    assert_eq!(s.prepare_exception(cow), Ok(2));
    assert_eq!(s.prepare_exception(cow), Ok(3));
    assert_eq!(s.prepare_exception(cow), Ok(4));
    let e = s.prepare_exception(cow).unwrap_err();
    assert_eq!(
        e,
        Error::NoSpace {
            chunk: 5,
            cow_sectors: 11
        }
    );
    assert_eq!(e.errno(), errno::ENOSPC);
    assert_eq!((s.next_free(), s.pending_count()), (5, 3));
    // The COW device grew: allocation resumes.
    assert_eq!(s.prepare_exception(12), Ok(5));
}

#[test]
fn commit_waits_while_others_are_pending_then_writes() {
    let (l, mut s, mut area) = fresh(1, 512);
    let a = s.prepare_exception(BIG).unwrap();
    let b = s.prepare_exception(BIG).unwrap();
    assert_eq!(
        s.commit_exception(&mut area, ex(100, a), true),
        Ok(CommitStep::Queued)
    );
    assert_eq!((s.current_committed(), s.callback_count()), (1, 1));
    let step = s.commit_exception(&mut area, ex(101, b), true).unwrap();
    assert_eq!(
        step,
        CommitStep::WriteArea(AreaWrite {
            area: 0,
            chunk: 1,
            offset: 0,
            len: 512,
            sector: 1,
            sectors: 1
        })
    );
    assert_eq!(
        s.commit_exception(&mut area, ex(1, 2), true),
        Err(Error::FlushInProgress)
    );
    assert_eq!(
        io_done(&mut s, &mut area, true),
        Ok(CommitStep::Complete {
            callbacks: 2,
            valid: true,
            clear_area: false,
        })
    );
    assert_eq!(s.callback_count(), 0);
    assert_eq!(s.dirty_range(), None);
    assert_eq!(read_exception(&area, 0), Some(ex(100, 2)));
    assert_eq!(read_exception(&area, 1), Some(ex(101, 3)));
    assert_eq!(
        io_done(&mut s, &mut area, true),
        Err(Error::NoFlushInProgress)
    );
    let _ = l;
}

#[test]
fn filling_an_area_zeroes_the_next_one_writes_and_advances() {
    let (l, mut s, mut area) = fresh(1, 512);
    let chunks: Vec<u64> = (0..32).map(|_| s.prepare_exception(BIG).unwrap()).collect();
    for c in &chunks[..31] {
        // Still pending ones and room left: queued.
        assert_eq!(
            s.commit_exception(&mut area, ex(*c, *c), true),
            Ok(CommitStep::Queued)
        );
    }
    // One more prepared exception is pending, but the area fills: flush.
    let extra = s.prepare_exception(BIG).unwrap();
    assert_eq!(extra, 35);
    let step = s
        .commit_exception(&mut area, ex(0, chunks[31]), true)
        .unwrap();
    assert_eq!(step, CommitStep::ZeroNextArea(l.area_io(1).unwrap()));
    let CommitStep::WriteArea(w) = io_done(&mut s, &mut area, true).unwrap() else {
        panic!("expected the area write");
    };
    assert_eq!((w.chunk, w.offset, w.len), (1, 0, 512));
    assert_eq!(read_exception(w.bytes(&area).unwrap(), 31), Some(ex(0, 33)));
    assert_eq!(
        io_done(&mut s, &mut area, true),
        Ok(CommitStep::Complete {
            callbacks: 32,
            valid: true,
            clear_area: true,
        })
    );
    assert_eq!((s.current_area(), s.current_committed()), (1, 0));
    assert!(area.iter().all(|b| *b == 0));
    assert_eq!(s.dirty_range(), None);
    assert_eq!(s.pending_count(), 1);
    assert_eq!(s.usage(BIG).unwrap().metadata_sectors, 3);
    // The pending one lands in area 1.
    let CommitStep::WriteArea(w) = s.commit_exception(&mut area, ex(5, extra), true).unwrap()
    else {
        panic!("expected the area write");
    };
    assert_eq!((w.area, w.chunk, w.sector), (1, 34, 34));
}

#[test]
fn failed_zeroing_invalidates_and_skips_the_area_write() {
    let (l, mut s, mut area) = fresh(1, 512);
    let chunks: Vec<u64> = (0..32).map(|_| s.prepare_exception(BIG).unwrap()).collect();
    let mut last = CommitStep::Queued;
    for c in chunks {
        last = s.commit_exception(&mut area, ex(1, c), true).unwrap();
    }
    assert_eq!(last, CommitStep::ZeroNextArea(l.area_io(1).unwrap()));
    // Report a failure of the zeroing.
    assert_eq!(
        io_done(&mut s, &mut area, false),
        Ok(CommitStep::Complete {
            callbacks: 32,
            valid: false,
            clear_area: true,
        })
    );
    assert!(!s.is_valid());
    assert_eq!((s.current_area(), s.current_committed()), (1, 0));
    // The next area's disk content is unknown: all of it is dirty.
    assert_eq!(s.dirty_range(), Some(0..512));
}

#[test]
fn failed_area_write_invalidates_and_keeps_the_range_dirty() {
    let (_, mut s, mut area) = fresh(8, 512);
    let c = s.prepare_exception(BIG).unwrap();
    let CommitStep::WriteArea(w) = s.commit_exception(&mut area, ex(1, c), true).unwrap() else {
        panic!("expected the area write");
    };
    assert_eq!((w.offset, w.len), (0, 512));
    assert_eq!(
        io_done(&mut s, &mut area, false),
        Ok(CommitStep::Complete {
            callbacks: 1,
            valid: false,
            clear_area: false,
        })
    );
    assert_eq!(s.dirty_range(), Some(0..512));
    // An invalid store never writes its area again.
    let c = s.prepare_exception(BIG).unwrap();
    assert_eq!(
        s.commit_exception(&mut area, ex(2, c), true),
        Ok(CommitStep::Complete {
            callbacks: 1,
            valid: false,
            clear_area: false,
        })
    );
}

#[test]
fn copy_error_invalidates_and_skips_the_write() {
    let (_, mut s, mut area) = fresh(1, 512);
    let a = s.prepare_exception(BIG).unwrap();
    let b = s.prepare_exception(BIG).unwrap();
    assert_eq!(
        s.commit_exception(&mut area, ex(1, a), false),
        Ok(CommitStep::Queued)
    );
    assert!(!s.is_valid());
    assert_eq!(
        s.commit_exception(&mut area, ex(2, b), true),
        Ok(CommitStep::Complete {
            callbacks: 2,
            valid: false,
            clear_area: false,
        })
    );
}

#[test]
fn dirty_range_is_rounded_to_the_write_block() {
    let (_, mut s, mut area) = fresh(32, 4096); // 16 KiB chunk, 1024 per area
                                                // Fill slots 0..300 (offset up to 4800), flushing each time.
    for i in 0..300u32 {
        let c = s.prepare_exception(BIG).unwrap();
        let CommitStep::WriteArea(w) = s.commit_exception(&mut area, ex(1, c), true).unwrap()
        else {
            panic!("expected the area write");
        };
        let off = i * 16 / 4096 * 4096;
        assert_eq!((w.offset, w.len), (off, 4096), "slot {i}");
        assert_eq!(w.sector, 32 + u64::from(off / 512));
        assert_eq!(w.sectors, 8);
        io_done(&mut s, &mut area, true).unwrap();
    }
    // Two commits in one flush across a block boundary: both blocks.
    for _ in 0..((4096 * 2 - 4800) / 16 - 1) {
        let c = s.prepare_exception(BIG).unwrap();
        s.commit_exception(&mut area, ex(1, c), true).unwrap();
        io_done(&mut s, &mut area, true).unwrap();
    }
    let a = s.prepare_exception(BIG).unwrap();
    let b = s.prepare_exception(BIG).unwrap();
    s.commit_exception(&mut area, ex(1, a), true).unwrap();
    let CommitStep::WriteArea(w) = s.commit_exception(&mut area, ex(1, b), true).unwrap() else {
        panic!("expected the area write");
    };
    assert_eq!((w.offset, w.len), (4096, 8192));
    assert_eq!(s.dirty_range(), Some(4096..12288));
}

#[test]
fn whole_chunk_write_block_reproduces_c_writes() {
    let (_, mut s, mut area) = fresh(8, 4096);
    let c = s.prepare_exception(BIG).unwrap();
    let CommitStep::WriteArea(w) = s.commit_exception(&mut area, ex(1, c), true).unwrap() else {
        panic!("expected the area write");
    };
    assert_eq!((w.offset, w.len, w.sectors), (0, 4096, 8));
}

#[test]
fn commit_refuses_protocol_errors_without_changing_state() {
    let (_, mut s, mut area) = fresh(1, 512);
    assert_eq!(
        s.commit_exception(&mut area, ex(1, 2), true),
        Err(Error::CommitWithoutPrepare)
    );
    let c = s.prepare_exception(BIG).unwrap();
    let before = s.clone();
    assert!(matches!(
        s.commit_exception(&mut [0u8; 16], ex(1, c), true),
        Err(Error::BufferSize { .. })
    ));
    assert_eq!(s, before);
    assert!(area.iter().all(|b| *b == 0));
}

#[test]
fn refused_exceptions_are_consumed_and_fail_without_being_recorded() {
    for (bad, why) in [
        (ex(1, 0), "header chunk"),
        (ex(1, 34), "metadata chunk"),
        (ex(u64::MAX, 2), "old_chunk too large"),
    ] {
        let (_, mut s, mut area) = fresh(1, 512);
        let _ = s.prepare_exception(BIG).unwrap();
        let step = s.commit_exception(&mut area, bad, true).unwrap();
        let CommitStep::Refused { error, callbacks } = step else {
            panic!("{why}: expected a refusal, got {step:?}");
        };
        assert_eq!(
            callbacks, 1,
            "{why}: the only pending exception ends the flush"
        );
        assert!(error.errno() > 0, "{why}");
        assert!(!s.is_valid(), "{why}: the store is invalid");
        assert_eq!(
            (s.pending_count(), s.callback_count(), s.current_committed()),
            (0, 0, 0),
            "{why}"
        );
        assert!(area.iter().all(|b| *b == 0), "{why}: nothing recorded");
    }
}

#[test]
fn a_refused_commit_does_not_hold_back_the_flush_of_the_others() {
    // Two exceptions in flight; the first is refused. The second must end
    // the flush and complete both callbacks, not queue behind a pending
    // count that never drops (dm-snapshot's dtr would wait for ever).
    let (_, mut s, mut area) = fresh(1, 512);
    let _a = s.prepare_exception(BIG).unwrap();
    let b = s.prepare_exception(BIG).unwrap();
    assert_eq!(
        s.commit_exception(&mut area, ex(1, 34), true),
        Ok(CommitStep::Refused {
            error: Error::NewChunkIsMetadata {
                area: 0,
                index: 0,
                new_chunk: 34,
                metadata_area: 1
            },
            callbacks: 0
        })
    );
    assert_eq!(s.pending_count(), 1);
    assert_eq!(
        s.commit_exception(&mut area, ex(2, b), true),
        Ok(CommitStep::Complete {
            callbacks: 2,
            valid: false,
            clear_area: false,
        })
    );
    assert_eq!((s.pending_count(), s.callback_count()), (0, 0));
}

#[test]
fn drop_snapshot_invalidates_and_returns_the_invalid_header() {
    let (l, mut s, mut area) = fresh(16, 512);
    let h = s.drop_snapshot();
    assert_eq!(h, DiskHeader::new(false, l.chunk_size()));
    assert!(!s.is_valid());
    // A commit after the drop no longer writes the area.
    let c = s.prepare_exception(BIG).unwrap();
    assert_eq!(
        s.commit_exception(&mut area, ex(1, c), true),
        Ok(CommitStep::Complete {
            callbacks: 1,
            valid: false,
            clear_area: false,
        })
    );
}

#[test]
fn invalid_store_is_all_dirty_and_never_merges() {
    let l = layout(1);
    let mut area = vec![1u8; 512];
    let mut s = Pstore::new_invalid(l, LogicalBlockSize::SECTOR, &mut area).unwrap();
    assert!(!s.is_valid());
    assert_eq!(s.dirty_range(), Some(0..512));
    assert_eq!(merge_prepare(&mut s, &area), Ok(Prep::Done));
}

// ----- merge -----

fn loaded(l: Layout, areas: &[Vec<Exception>], chunks: u64) -> (Vec<u8>, Pstore, Vec<u8>) {
    let img = store_image(l, chunks, areas);
    let (r, _, mut area) = scan(&img, l).unwrap();
    let s = Pstore::from_scan(l, LogicalBlockSize::SECTOR, &r, &mut area).unwrap();
    (img, s, area)
}

#[test]
fn merge_finds_the_run_of_consecutive_exceptions_backwards() {
    let l = layout(1);
    // old/new pairs: (10,2) (20,3) (21,4) (22,5)
    let es = vec![ex(10, 2), ex(20, 3), ex(21, 4), ex(22, 5)];
    let (_, mut s, mut area) = loaded(l, &[es], 100);
    let Prep::Run(r) = merge_prepare(&mut s, &area).unwrap() else {
        panic!("expected a run");
    };
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
    // More than prepared, or zero, is refused.
    assert_eq!(
        merge_commit(&mut s, &mut area, 4),
        Err(Error::MergeCountInvalid {
            nr_merged: 4,
            prepared: 3
        })
    );
    assert!(merge_commit(&mut s, &mut area, 0).is_err());
    let w = merge_commit(&mut s, &mut area, 2).unwrap();
    assert_eq!((w.chunk, w.offset, w.len), (1, 0, 512));
    assert_eq!(read_exception(&area, 2), Some(Exception::default()));
    assert_eq!(read_exception(&area, 1), Some(ex(20, 3)));
    s.commit_merge_done(true).unwrap();
    assert_eq!(s.current_committed(), 2);
    assert_eq!(s.next_free(), 1 + 2 + 1);
    assert_eq!(s.dirty_range(), None);
    // Old chunk steps by one but new chunk does not: a run of 1.
    let Prep::Run(r) = merge_prepare(&mut s, &area).unwrap() else {
        panic!("expected a run");
    };
    assert_eq!((r.last_old_chunk, r.count), (20, 1));
}

#[test]
fn merge_steps_back_to_the_previous_area_after_the_current_empties() {
    let l = layout(1);
    let areas = in_order(l, 33, |k| 500 + k);
    let (img, mut s, mut area) = loaded(l, &areas, 200);
    assert_eq!((s.current_area(), s.current_committed()), (1, 1));
    let Prep::Run(r) = merge_prepare(&mut s, &area).unwrap() else {
        panic!("expected a run");
    };
    assert_eq!((r.last_old_chunk, r.last_new_chunk, r.count), (532, 35, 1));
    merge_commit(&mut s, &mut area, 1).unwrap();
    s.commit_merge_done(true).unwrap();
    assert_eq!(
        (s.current_area(), s.current_committed(), s.next_free()),
        (1, 0, 35)
    );
    // Empty area: read area 0. Nothing changes until the read is accepted.
    let Prep::ReadArea(io) = merge_prepare(&mut s, &area).unwrap() else {
        panic!("expected a read");
    };
    assert_eq!(io, l.area_io(0).unwrap());
    assert_eq!(s.current_area(), 1);
    // A failed read is simply not reported; asking again repeats it.
    assert_eq!(merge_prepare(&mut s, &area), Ok(Prep::ReadArea(io)));
    read_chunk(&img, l, io.chunk, &mut area).unwrap();
    let r = merge_read(&mut s, &area, sectors(&img)).unwrap();
    assert_eq!((r.last_old_chunk, r.last_new_chunk, r.count), (531, 33, 32));
    assert_eq!((s.current_area(), s.current_committed()), (0, 32));
    assert_eq!(s.usage(BIG).unwrap().metadata_sectors, 2);
    merge_commit(&mut s, &mut area, 32).unwrap();
    s.commit_merge_done(true).unwrap();
    assert_eq!((s.current_committed(), s.next_free()), (0, 2));
    assert_eq!(merge_prepare(&mut s, &area), Ok(Prep::Done));
}

#[test]
fn merge_read_refuses_a_corrupt_previous_area() {
    let l = layout(1);
    let areas = in_order(l, 32, |k| k);
    let (mut img, mut s, mut area) = loaded(l, &areas, 200);
    assert_eq!((s.current_area(), s.current_committed()), (1, 0));
    let Prep::ReadArea(io) = merge_prepare(&mut s, &area).unwrap() else {
        panic!("expected a read");
    };
    // The area changed on disk since activation: an end marker in it.
    let base = chunk_range(l, io.chunk).start;
    clear_exception(&mut img[base..base + 512], 7).unwrap();
    read_chunk(&img, l, io.chunk, &mut area).unwrap();
    assert_eq!(
        merge_read(&mut s, &area, sectors(&img)),
        Err(Error::UnexpectedEndMarker { area: 0, index: 7 })
    );
    assert_eq!((s.current_area(), s.current_committed()), (1, 0));
    // A new_chunk past the device.
    write_exception(&mut img[base..base + 512], 7, ex(1, 150)).unwrap();
    read_chunk(&img, l, io.chunk, &mut area).unwrap();
    assert!(matches!(
        merge_read(&mut s, &area, 100),
        Err(Error::NewChunkBeyondDevice { .. })
    ));
    assert_eq!(s.current_area(), 1);
}

#[test]
fn merge_calls_out_of_order_are_refused() {
    let l = layout(1);
    let (_, mut s, mut area) = loaded(l, &[vec![ex(1, 2)]], 100);
    assert_eq!(merge_commit(&mut s, &mut area, 1), Err(Error::MergeState));
    assert_eq!(s.commit_merge_done(true), Err(Error::MergeState));
    assert_eq!(merge_read(&mut s, &area, 100), Err(Error::MergeState));
    let _ = merge_prepare(&mut s, &area).unwrap();
    merge_commit(&mut s, &mut area, 1).unwrap();
    assert_eq!(merge_prepare(&mut s, &area), Err(Error::MergeState));
    assert_eq!(merge_commit(&mut s, &mut area, 1), Err(Error::MergeState));
}

#[test]
fn failed_merge_write_blocks_further_merging() {
    let l = layout(1);
    let (_, mut s, mut area) = loaded(l, &[vec![ex(1, 2), ex(2, 3)]], 100);
    let _ = merge_prepare(&mut s, &area).unwrap();
    merge_commit(&mut s, &mut area, 2).unwrap();
    s.commit_merge_done(false).unwrap();
    // Not reduced: the disk still has both exceptions.
    assert_eq!(s.current_committed(), 2);
    let e = merge_prepare(&mut s, &area).unwrap_err();
    assert_eq!(e, Error::MergeCommitFailed);
    assert_eq!(e.errno(), errno::EIO);
    assert_eq!(
        merge_commit(&mut s, &mut area, 1),
        Err(Error::MergeCommitFailed)
    );
}

#[test]
fn commit_and_merge_steps_leave_area_sized_work_to_the_caller() {
    // The kernel store holds its state spinlock around every `Pstore`
    // call: none of them may zero, scan or validate a whole area. Moving
    // to the next area leaves the buffer as it is (the caller zeroes it on
    // `clear_area`), and the merge path's reads and checks of an area take
    // no `Pstore` at all.
    let (l, mut s, mut area) = fresh(1, 512);
    let chunks: Vec<u64> = (0..32).map(|_| s.prepare_exception(BIG).unwrap()).collect();
    for c in chunks {
        let _ = s.commit_exception(&mut area, ex(1, c), true).unwrap();
    }
    assert!(matches!(
        s.commit_io_done(true),
        Ok(CommitStep::WriteArea(_))
    ));
    let before = area.clone();
    assert_eq!(
        s.commit_io_done(true),
        Ok(CommitStep::Complete {
            callbacks: 32,
            valid: true,
            clear_area: true
        })
    );
    assert_eq!(area, before, "the state call did not touch the buffer");
    assert_eq!((s.current_area(), s.current_committed()), (1, 0));
    // Merging back: the previous area is checked by the layout, outside
    // the state, and the state only moves.
    area.fill(0);
    let PrepareMerge::ReadArea(io) = s.prepare_merge().unwrap() else {
        panic!("expected a read of area 0");
    };
    let checked = l.check_full_area(io.area, &before, BIG).unwrap();
    let query = s.merge_area_read(checked).unwrap();
    assert_eq!((s.current_area(), s.current_committed()), (0, 32));
    let run = query.find(&before).unwrap();
    s.merge_run_found(&run).unwrap();
    let m = s.commit_merge(run.count).unwrap();
    assert_eq!(m.clear, (32 - run.count as usize) * 16..32 * 16);
}

#[test]
fn batch_capacity_is_an_area_or_max_batch_whichever_is_smaller() {
    assert_eq!(batch_capacity(layout(1)), 32);
    assert_eq!(batch_capacity(layout(8)), 256);
    assert_eq!(batch_capacity(layout(256)), MAX_BATCH); // 128 KiB: 8192 per area
    assert_eq!(batch_capacity(layout(1 << 21)), MAX_BATCH);
    let (l, s, _) = fresh(1024, 512);
    assert_eq!(s.batch_limit(), MAX_BATCH);
    assert_eq!(s.clone().with_batch_limit(0).batch_limit(), 1);
    assert_eq!(
        s.with_batch_limit(u32::MAX).batch_limit(),
        l.exceptions_per_area()
    );
}

#[test]
fn a_full_batch_is_written_while_other_exceptions_are_still_pending() {
    let (_, s, mut area) = fresh(1, 512);
    let mut s = s.with_batch_limit(2);
    let a = s.prepare_exception(BIG).unwrap();
    let b = s.prepare_exception(BIG).unwrap();
    let c = s.prepare_exception(BIG).unwrap();
    assert_eq!(
        s.commit_exception(&mut area, ex(10, a), true),
        Ok(CommitStep::Queued)
    );
    // The second fills the batch: written though `c` is pending.
    let Ok(CommitStep::WriteArea(w)) = s.commit_exception(&mut area, ex(11, b), true) else {
        panic!("a full batch must be written");
    };
    assert_eq!(w.sector, 1);
    assert_eq!(
        s.commit_io_done(true),
        Ok(CommitStep::Complete {
            callbacks: 2,
            valid: true,
            clear_area: false
        })
    );
    assert_eq!((s.pending_count(), s.callback_count()), (1, 0));
    // The last one flushes as in C, into the same area.
    assert!(matches!(
        s.commit_exception(&mut area, ex(12, c), true),
        Ok(CommitStep::WriteArea(_))
    ));
    assert!(matches!(
        s.commit_io_done(true),
        Ok(CommitStep::Complete { callbacks: 1, .. })
    ));
    assert_eq!(s.current_committed(), 3);
}

#[test]
fn a_refusal_that_fills_the_batch_completes_it_at_once() {
    // With the batch full, the callbacks queued so far are due: the store
    // is invalid, so they report failure without waiting for a write, and
    // the caller's array never needs more than the limit.
    let (_, s, mut area) = fresh(1, 512);
    let mut s = s.with_batch_limit(2);
    let a = s.prepare_exception(BIG).unwrap();
    let _b = s.prepare_exception(BIG).unwrap();
    let c = s.prepare_exception(BIG).unwrap();
    assert_eq!(
        s.commit_exception(&mut area, ex(10, a), true),
        Ok(CommitStep::Queued)
    );
    assert!(matches!(
        s.commit_exception(&mut area, ex(1, 34), true),
        Ok(CommitStep::Refused { callbacks: 2, .. })
    ));
    assert_eq!((s.pending_count(), s.callback_count()), (1, 0));
    assert!(matches!(
        s.commit_exception(&mut area, ex(12, c), true),
        Ok(CommitStep::Complete {
            callbacks: 1,
            valid: false,
            ..
        })
    ));
}

#[test]
fn an_abandoned_commit_goes_through_the_pending_count() {
    let l = layout(1);
    let mut area = vec![0u8; 512];
    let mut s = Pstore::new_snapshot(l, LogicalBlockSize::SECTOR, &mut area).unwrap();
    let a = s.prepare_exception(100).unwrap();
    let _b = s.prepare_exception(100).unwrap();
    let c = s.prepare_exception(100).unwrap();
    assert_eq!(
        s.commit_exception(&mut area, ex(1, a), true),
        Ok(CommitStep::Queued)
    );
    // The second one's callback could not be queued: one still pending.
    assert_eq!(
        s.abandon_commit(),
        Ok(CommitStep::Refused {
            error: Error::CallbackQueueFull,
            callbacks: 0
        })
    );
    assert!(!s.is_valid());
    assert_eq!(s.pending_count(), 1);
    // The last pending one ends the flush: its callback and the first.
    assert_eq!(
        s.commit_exception(&mut area, ex(3, c), true),
        Ok(CommitStep::Complete {
            callbacks: 2,
            valid: false,
            clear_area: false
        })
    );
    assert_eq!(s.abandon_commit(), Err(Error::CommitWithoutPrepare));
}
