// SPDX-License-Identifier: GPL-2.0-only
//! Unit tests of the store: prepare, group commit, dirty ranges,
//! invalidation, usage and merge, through [`Committer`] over an in-memory
//! device. Commit writes are issued by the test with [`issue`] and handed
//! back with [`complete`], as the kernel store issues them with dm-io.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::*;
use snap_format::*;
use std::cell::RefCell;
use std::collections::VecDeque;

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
    let area = vec![0xEEu8; l.chunk_bytes() as usize];
    let (s, c) = Committer::new_snapshot(l, lbs(block), buffers_with(l, lbs(block), area)).unwrap();
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

/// Commits `e` as exception `done` on a store with no write in flight and
/// completes the write it makes: its completion comes back alone.
#[track_caller]
fn commit_now(c: &mut TestCommitter, s: &Locked, d: &mut MemDev, e: Exception, done: u32) {
    assert_eq!(
        commit_sync(c, s, d, e, true, done),
        Synced::Done(vec![done])
    );
}

/// The completions of a [`Commit::Due`], called, their queue given back;
/// panics on any other answer, or if giving the queue back makes a write.
#[track_caller]
fn expect_due(c: &mut TestCommitter, s: &Locked, r: TestCommit) -> Vec<u32> {
    let Commit::Due(b) = r else {
        panic!("expected Due, got {r:?}");
    };
    let (due, next) = take_due(c, s, b);
    assert!(next.is_none(), "a write after Due");
    due
}

const BIG: u64 = 1 << 30;

#[test]
fn new_store_starts_like_persistent_ctr() {
    let (l, s, mut c) = fresh(32, 512);
    let sh = s.get();
    assert!(sh.is_valid());
    assert_eq!(
        (sh.next_free(), sh.current_area(), sh.pending_count()),
        (2, 0, 0)
    );
    assert_eq!((c.current_area(), c.current_committed()), (0, 0));
    assert!(c.open().is_empty());
    assert!(c.is_idle());
    assert_eq!(c.dirty_range(), None);
    assert!(!c.cleanup_pending());
    assert!(c.merger().is_some());
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
    let wb = LogicalBlockSize::SECTOR;
    assert!(matches!(
        Committer::new_snapshot(l, wb, buffers_with(l, wb, vec![0u8; 256])),
        Err(Error::BufferSize { .. })
    ));
    assert!(matches!(
        Committer::new_invalid(l, wb, buffers_with(l, wb, vec![0u8; 256])),
        Err(Error::BufferSize { .. })
    ));
    // The I/O buffer must hold the largest write.
    let io = io_buffer_len(l, wb).unwrap();
    assert_eq!(io, 512);
    let mut b = buffers(l, wb);
    b.io = vec![0u8; io - 1];
    assert!(matches!(
        Committer::new_snapshot(l, wb, b),
        Err(Error::BufferSize {
            expected: 512,
            actual: 511
        })
    ));
    // A longer one is fine.
    let mut b = buffers(l, wb);
    b.io = vec![0u8; 4096];
    assert!(Committer::new_snapshot(l, wb, b).is_ok());
    assert!(matches!(
        Committer::new_snapshot(l, lbs(1024), buffers(l, wb)),
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
        Committer::from_scan(l, wb, &r, buffers(l, wb)),
        Err(Error::IndexOutOfArea { index: 32, .. })
    ));
    let r = ScanResult {
        current_committed: 0,
        ..r
    };
    assert!(matches!(
        Committer::from_scan(l, lbs(1024), &r, buffers(l, wb)),
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
fn the_first_commit_writes_at_once_and_those_during_its_flight_join_the_next_write() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    let a = prepare(&s, BIG).unwrap();
    let b = prepare(&s, BIG).unwrap();
    let x = prepare(&s, BIG).unwrap();
    // Idle: the write is made at once, though others are pending (C would
    // wait for them).
    let w = expect_write(c.commit_exception(&s, &mut d, ex(100, a), true, 0));
    assert_eq!(w.zero_first(), None);
    assert_eq!(*w.write(), whole(0, 1));
    assert_eq!(w.bytes(), c.area());
    assert_eq!(
        w.buffer().len(),
        io_buffer_len(l, LogicalBlockSize::SECTOR).unwrap()
    );
    assert!(d.ops.is_empty(), "the caller issues the write");
    assert!(!c.is_idle());
    assert!(c.open().is_empty(), "the completion is in flight");
    assert_eq!(c.dirty_range(), None, "the write in flight counts as clean");
    // During the flight: recorded and queued, nothing written.
    let r = c.commit_exception(&s, &mut d, ex(101, b), true, 1);
    assert!(is_queued(&r), "{r:?}");
    let r = c.commit_exception(&s, &mut d, ex(102, x), true, 2);
    assert!(is_queued(&r), "{r:?}");
    assert!(d.ops.is_empty());
    assert_eq!(c.open().done, [1, 2]);
    assert_eq!(c.current_committed(), 3);
    assert_eq!(c.dirty_range(), Some(0..512));
    // The bytes in flight are the copy taken when the write was made.
    assert_eq!(read_exception(w.bytes(), 0), Some(ex(100, a)));
    assert_eq!(read_exception(w.bytes(), 1), Some(Exception::default()));
    assert_eq!((s.get().is_valid(), s.get().pending_count()), (true, 0));
    // The first write completes: only its completion is due, and the
    // group commit of the other two is the next write.
    assert!(issue(&mut d, &w, true));
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!(due, [0]);
    let next = next.expect("a group commit");
    assert_eq!(next.zero_first(), None);
    assert_eq!(*next.write(), whole(0, 1));
    assert!(c.open().is_empty());
    assert!(!c.is_idle());
    assert_eq!(on_disk(&d, l, 1, 0), Some(ex(100, 2)));
    assert_eq!(on_disk(&d, l, 1, 1), Some(Exception::default()));
    // Theirs come back once it completes, in commit order.
    assert!(issue(&mut d, &next, true));
    let (due, next) = complete(&mut c, &s, next, true);
    assert_eq!(due, [1, 2]);
    assert!(next.is_none());
    assert!(c.is_idle());
    assert_eq!(c.dirty_range(), None);
    assert_eq!(on_disk(&d, l, 1, 1), Some(ex(101, 3)));
    assert_eq!(on_disk(&d, l, 1, 2), Some(ex(102, 4)));
    assert_eq!(on_disk(&d, l, 1, 3), Some(Exception::default()));
    assert_eq!(d.img[chunk_range(l, 1)], *c.area());
    assert!(d.reports.is_empty());
}

/// The bytes a write carries are a copy of the area's dirty blocks taken
/// when the write was made, not the area itself: records added to the same
/// block afterwards change the area but not the write, and the disk gets
/// the copy. The full area's write made by write_done holds the area as it
/// was then, though the area in memory moved on and takes new records.
#[test]
fn a_write_carries_the_area_as_it_was_when_made() {
    let (l, s, mut c) = fresh(8, 512); // 4 KiB chunks, 256 records per area
    let mut d = new_dev(l, 20);
    let chunks: Vec<u64> = (0..4).map(|_| prepare(&s, BIG).unwrap()).collect();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(1, chunks[0]), true, 0));
    let made = c.area()[..512].to_vec();
    assert_eq!(w.bytes(), made);
    assert_ne!(w.bytes().as_ptr(), c.area().as_ptr());
    for i in 1..3 {
        let r = c.commit_exception(
            &s,
            &mut d,
            ex(1 + u64::from(i), chunks[i as usize]),
            true,
            i,
        );
        assert!(is_queued(&r), "{r:?}");
    }
    assert_ne!(c.area()[..512], made[..]);
    assert_eq!(w.bytes(), made, "records added after the write was made");
    assert!(issue(&mut d, &w, true));
    let on = chunk_range(l, 1).start;
    assert_eq!(d.img[on..on + 512], made[..]);
    assert_eq!(on_disk(&d, l, 1, 1), Some(Exception::default()));
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!(due, [0]);
    // The next write copies the area as it is now, again apart from it.
    let w = next.unwrap();
    let made = c.area()[..512].to_vec();
    assert_eq!(w.bytes(), made);
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(9, chunks[3]),
        true,
        3
    )));
    assert_eq!(w.bytes(), made);
    assert_eq!(settle(&mut c, &s, &mut d, w), [1, 2, 3]);
    assert_eq!(d.img[chunk_range(l, 1)], *c.area());

    // A full area's write, made when the flight before it ends.
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    let chunks: Vec<u64> = (0..33).map(|_| prepare(&s, BIG).unwrap()).collect();
    let first = expect_write(c.commit_exception(&s, &mut d, ex(7, chunks[0]), true, 0));
    for i in 1..32 {
        let r = c.commit_exception(&s, &mut d, ex(7, chunks[i as usize]), true, i);
        assert!(is_queued(&r), "{r:?}");
    }
    let area0 = c.area().to_vec();
    assert!(issue(&mut d, &first, true));
    let (_, next) = complete(&mut c, &s, first, true);
    let full = next.unwrap();
    assert_eq!(full.bytes(), area0);
    assert!(c.area().iter().all(|b| *b == 0), "the area moved on");
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(8, chunks[32]),
        true,
        32
    )));
    assert_ne!(c.area(), &area0[..]);
    assert_eq!(full.bytes(), area0);
    assert!(issue(&mut d, &full, true));
    assert_eq!(d.img[chunk_range(l, 1)], area0[..]);
    let (due, next) = complete(&mut c, &s, full, true);
    assert_eq!(due, (1..32).collect::<Vec<u32>>());
    assert_eq!(settle(&mut c, &s, &mut d, next.unwrap()), [32]);
    assert_eq!(on_disk(&d, l, 34, 0), Some(ex(8, 35)));
}

/// Commits the exceptions waiting, in order, until one is told to wait
/// (it stays first): a write a commit returns goes in flight. Whether one
/// waits.
fn commit_waiting(
    c: &mut TestCommitter,
    s: &Locked,
    d: &mut MemDev,
    flight: &mut Option<TestWrite>,
    waiting: &mut VecDeque<(u32, Exception)>,
) -> bool {
    while let Some((k, e)) = waiting.pop_front() {
        match c.commit_exception(s, d, e, true, k) {
            Commit::Write(w) => {
                assert!(flight.is_none(), "two writes in flight");
                *flight = Some(w);
            }
            Commit::Queued => assert!(flight.is_some(), "queued with nothing in flight"),
            Commit::Wait(k) => {
                assert!(flight.is_some(), "Wait with nothing in flight");
                waiting.push_front((k, e));
                return true;
            }
            other => panic!("{k}: {other:?}"),
        }
    }
    false
}

/// Completions come back once each, in commit order, across many flights
/// and an area filled during one of them. Commits run one at a time, as
/// kcopyd calls them: one told to wait is retried once the flight ends,
/// and those after it wait behind it.
#[test]
fn completions_come_back_once_each_in_commit_order_across_flights() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 200);
    let chunks: Vec<u64> = (0..40).map(|_| prepare(&s, BIG).unwrap()).collect();
    let mut flight = None;
    let mut waiting = VecDeque::new();
    let mut back = vec![];
    let mut waits = 0;
    // Commit in a scrambled order of the prepared chunks, completing the
    // write in flight after every third commit.
    let order: Vec<usize> = (0..40).map(|i| (i * 7) % 40).collect();
    for (k, &i) in (0u32..).zip(&order) {
        waiting.push_back((k, ex(1000 + i as u64, chunks[i])));
        waits += u32::from(commit_waiting(
            &mut c,
            &s,
            &mut d,
            &mut flight,
            &mut waiting,
        ));
        if k % 3 == 2 {
            let w = flight.take().unwrap();
            let ok = issue(&mut d, &w, true);
            let (mut due, next) = complete(&mut c, &s, w, ok);
            back.append(&mut due);
            flight = next;
            waits += u32::from(commit_waiting(
                &mut c,
                &s,
                &mut d,
                &mut flight,
                &mut waiting,
            ));
        }
    }
    while let Some(w) = flight.take() {
        let ok = issue(&mut d, &w, true);
        let (mut due, next) = complete(&mut c, &s, w, ok);
        back.append(&mut due);
        flight = next;
        waits += u32::from(commit_waiting(
            &mut c,
            &s,
            &mut d,
            &mut flight,
            &mut waiting,
        ));
    }
    assert!(waiting.is_empty());
    assert!(waits > 0, "area 0 filled during a flight");
    assert_eq!(back, (0..40).collect::<Vec<u32>>());
    assert!(c.is_idle());
    assert_eq!(s.get().pending_count(), 0);
    let (_, seen, _) = scan(&d.img, l).unwrap();
    let want: Vec<Exception> = order
        .iter()
        .map(|&i| ex(1000 + i as u64, chunks[i]))
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn filling_an_area_zeroes_the_next_one_writes_and_advances() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    d.img[chunk_range(l, 34)].fill(0xAA);
    let chunks: Vec<u64> = (0..32).map(|_| prepare(&s, BIG).unwrap()).collect();
    for (i, ch) in (0..).zip(&chunks[..31]) {
        commit_now(&mut c, &s, &mut d, ex(*ch, *ch), i);
    }
    // One more prepared exception is pending; the record that fills the
    // area makes its last write with the next area to zero first.
    let extra = prepare(&s, BIG).unwrap();
    assert_eq!(extra, 35);
    let n = d.ops.len();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(0, chunks[31]), true, 31));
    assert_eq!(w.zero_first(), Some(l.area_io(1).unwrap()));
    assert_eq!(*w.write(), whole(0, 1));
    assert_eq!(read_exception(w.bytes(), 31), Some(ex(0, 33)));
    // The area in memory moves on at once.
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    assert!(c.area().iter().all(|b| *b == 0));
    assert_eq!(c.dirty_range(), None);
    assert_eq!(s.get().current_area(), 1);
    // C: zero_disk_area() of the next area first, then the area write.
    assert!(issue(&mut d, &w, true));
    assert_eq!(
        d.ops[n..],
        [Op::Zero(l.area_io(1).unwrap()), Op::Write(whole(0, 1))]
    );
    assert!(d.img[chunk_range(l, 34)].iter().all(|b| *b == 0));
    assert_eq!(on_disk(&d, l, 1, 31), Some(ex(0, 33)));
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!(due, [31]);
    assert!(next.is_none());
    let sh = s.get();
    assert!(sh.is_valid());
    assert_eq!((sh.current_area(), sh.pending_count()), (1, 1));
    assert_eq!(sh.usage(BIG).unwrap().metadata_sectors, 3);
    // The pending one lands in area 1.
    commit_now(&mut c, &s, &mut d, ex(5, extra), 32);
    assert_eq!(d.ops[n + 2..], [Op::Write(whole(1, 34))]);
    assert_eq!(on_disk(&d, l, 34, 0), Some(ex(5, 35)));
}

/// The record that fills an area during a flight is only queued: the
/// full area stays in memory, and the next commit waits. When the flight
/// ends, write_done makes the full area's write with the next area zeroed
/// first and the area in memory moves on; the waiting commit then records
/// in the next area and goes out in the write after it.
#[test]
fn an_area_filling_during_a_flight_is_written_when_the_flight_ends() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    d.img[chunk_range(l, 34)].fill(0xAA);
    let chunks: Vec<u64> = (0..33).map(|_| prepare(&s, BIG).unwrap()).collect();
    let first = expect_write(c.commit_exception(&s, &mut d, ex(500, chunks[0]), true, 0));
    for (i, ch) in (1..).zip(&chunks[1..32]) {
        let r = c.commit_exception(&s, &mut d, ex(500 + u64::from(i), *ch), true, i);
        assert!(is_queued(&r), "{i}: {r:?}");
    }
    // Area 0 is full and its last write waits for the flight: the area in
    // memory has not moved on.
    assert_eq!((c.current_area(), c.current_committed()), (0, 32));
    assert_eq!(s.get().current_area(), 0);
    assert_eq!(c.open().done, (1..32).collect::<Vec<u32>>());
    assert!(!c.is_idle());
    assert!(c.merger().is_none());
    // The next commit waits; nothing touches the disk.
    let r = c.commit_exception(&s, &mut d, ex(900, chunks[32]), true, 32);
    assert!(matches!(r, Commit::Wait(32)), "{r:?}");
    assert_eq!(s.get().pending_count(), 1);
    assert!(d.ops.is_empty());
    assert!(issue(&mut d, &first, true));
    let (due, next) = complete(&mut c, &s, first, true);
    assert_eq!(due, [0]);
    let full = next.expect("the last write of area 0");
    assert_eq!(full.zero_first(), Some(l.area_io(1).unwrap()));
    assert_eq!(*full.write(), whole(0, 1));
    assert_eq!(read_exception(full.bytes(), 31), Some(ex(531, 33)));
    // The write is made: the area in memory moves on.
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    assert_eq!(s.get().current_area(), 1);
    assert!(c.area().iter().all(|b| *b == 0));
    assert_eq!(c.dirty_range(), None);
    assert!(c.open().is_empty());
    assert!(c.merger().is_none());
    // The retried commit records in area 1 during that flight.
    let r = c.commit_exception(&s, &mut d, ex(900, chunks[32]), true, 32);
    assert!(is_queued(&r), "{r:?}");
    assert_eq!(read_exception(c.area(), 0), Some(ex(900, 35)));
    assert_eq!(c.open().done, [32]);
    // Nothing touches area 1 on disk before the zeroing.
    assert!(d.img[chunk_range(l, 34)].iter().all(|b| *b == 0xAA));
    assert!(issue(&mut d, &full, true));
    assert_eq!(
        d.ops[1..],
        [Op::Zero(l.area_io(1).unwrap()), Op::Write(whole(0, 1))]
    );
    assert!(d.img[chunk_range(l, 34)].iter().all(|b| *b == 0));
    let (due, next) = complete(&mut c, &s, full, true);
    assert_eq!(due, (1..32).collect::<Vec<u32>>());
    // Then area 1's record.
    let w = next.expect("the write of area 1");
    assert_eq!((w.zero_first(), *w.write()), (None, whole(1, 34)));
    assert!(issue(&mut d, &w, true));
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!(due, [32]);
    assert!(next.is_none());
    assert!(c.is_idle());
    assert!(c.merger().is_some());
    let (r, seen, _) = scan(&d.img, l).unwrap();
    assert_eq!(seen.len(), 33);
    assert_eq!((r.current_area, r.current_committed), (1, 1));
}

/// Two areas filling back to back, each during a flight: each full area
/// waits for the write before it, a commit after it waits and changes
/// nothing (shared state, area, open batch, dirty range), and everything
/// lands in order, each area zeroed before the write that fills the one
/// before it.
#[test]
fn areas_filling_back_to_back_each_wait_for_the_flight_before_them() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 200);
    let chunks: Vec<u64> = (0..70).map(|_| prepare(&s, BIG).unwrap()).collect();
    let e = |i: u32| ex(100 + u64::from(i), chunks[i as usize]);
    let first = expect_write(c.commit_exception(&s, &mut d, e(0), true, 0));
    for i in 1..32 {
        let r = c.commit_exception(&s, &mut d, e(i), true, i);
        assert!(is_queued(&r), "{i}: {r:?}");
    }
    assert_eq!((c.current_area(), c.current_committed()), (0, 32));
    let state = |c: &TestCommitter| {
        (
            c.area().to_vec(),
            s.get(),
            c.open().clone(),
            c.dirty_range(),
            c.current_area(),
            c.current_committed(),
        )
    };
    let before = state(&c);
    // Told to wait, again and again while the flight lasts: nothing
    // changes, nothing is reported.
    for _ in 0..2 {
        let r = c.commit_exception(&s, &mut d, e(32), true, 32);
        assert!(matches!(r, Commit::Wait(32)), "{r:?}");
        assert_eq!(state(&c), before);
    }
    assert_eq!(s.get().pending_count(), 70 - 32);
    assert!(d.ops.is_empty() && d.reports.is_empty());
    // The flight ends: area 0's last write goes, and area 1 takes records.
    assert!(issue(&mut d, &first, true));
    let (due, next) = complete(&mut c, &s, first, true);
    assert_eq!(due, [0]);
    let full0 = next.unwrap();
    assert_eq!(full0.zero_first(), Some(l.area_io(1).unwrap()));
    for i in 32..64 {
        let r = c.commit_exception(&s, &mut d, e(i), true, i);
        assert!(is_queued(&r), "{i}: {r:?}");
    }
    // Area 1 filled during that flight: the same again.
    assert_eq!((c.current_area(), c.current_committed()), (1, 32));
    let before = state(&c);
    let r = c.commit_exception(&s, &mut d, e(64), true, 64);
    assert!(matches!(r, Commit::Wait(64)), "{r:?}");
    assert_eq!(state(&c), before);
    assert!(issue(&mut d, &full0, true));
    let (due, next) = complete(&mut c, &s, full0, true);
    assert_eq!(due, (1..32).collect::<Vec<u32>>());
    let full1 = next.unwrap();
    assert_eq!(full1.zero_first(), Some(l.area_io(2).unwrap()));
    assert_eq!((c.current_area(), c.current_committed()), (2, 0));
    let r = c.commit_exception(&s, &mut d, e(64), true, 64);
    assert!(is_queued(&r), "{r:?}");
    assert_eq!(
        settle(&mut c, &s, &mut d, full1),
        (32..65).collect::<Vec<u32>>()
    );
    assert_eq!(
        d.ops,
        [
            Op::Write(whole(0, 1)),
            Op::Zero(l.area_io(1).unwrap()),
            Op::Write(whole(0, 1)),
            Op::Zero(l.area_io(2).unwrap()),
            Op::Write(whole(1, 34)),
            Op::Write(whole(2, 67)),
        ]
    );
    assert!(c.is_idle());
    let (r, seen, _) = scan(&d.img, l).unwrap();
    assert_eq!(seen, (0..65).map(e).collect::<Vec<_>>());
    assert_eq!((r.current_area, r.current_committed), (2, 1));
}

#[test]
fn failed_zeroing_invalidates_and_skips_the_area_write() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    let chunks: Vec<u64> = (0..32).map(|_| prepare(&s, BIG).unwrap()).collect();
    for (i, ch) in (0..).zip(&chunks[..31]) {
        commit_now(&mut c, &s, &mut d, ex(1, *ch), i);
    }
    let before = d.img.clone();
    d.fail_zero = true;
    let n = d.ops.len();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(1, chunks[31]), true, 31));
    assert!(!issue(&mut d, &w, true));
    assert_eq!(d.ops[n..], [Op::Zero(l.area_io(1).unwrap())]);
    assert_eq!(d.img, before, "the area write was not tried");
    let (due, next) = complete(&mut c, &s, w, false);
    assert_eq!(due, [31]);
    assert!(next.is_none());
    assert!(!s.get().is_valid());
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    assert_eq!(s.get().current_area(), 1);
    // An invalid store writes nothing more.
    d.fail_zero = false;
    let ch = prepare(&s, BIG).unwrap();
    assert_eq!(
        commit_sync(&mut c, &s, &mut d, ex(2, ch), true, 32),
        Synced::Done(vec![32])
    );
    assert_eq!(d.ops.len(), n + 1);
}

#[test]
fn failed_area_write_invalidates_and_later_commits_write_nothing() {
    let (l, s, mut c) = fresh(8, 512);
    let mut d = new_dev(l, 10);
    let ch = prepare(&s, BIG).unwrap();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(1, ch), true, 0));
    d.fail_write = true;
    assert!(!issue(&mut d, &w, true));
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
    let (due, next) = complete(&mut c, &s, w, false);
    assert_eq!(due, [0]);
    assert!(next.is_none());
    assert!(!s.get().is_valid());
    assert!(c.is_idle());
    // An invalid store never writes its area again.
    d.fail_write = false;
    let ch = prepare(&s, BIG).unwrap();
    let r = c.commit_exception(&s, &mut d, ex(2, ch), true, 1);
    assert!(is_due(&r), "{r:?}");
    assert_eq!(expect_due(&mut c, &s, r), [1]);
    assert_eq!(d.ops.len(), 1);
    assert!(d.img[chunk_range(l, 1)].iter().all(|b| *b == 0));
}

/// A failed write invalidates the store. Its completion is due from
/// write_done, and those of the open batch, in order, from the give_back
/// of that queue; no write is made after it. With area 0 full and waiting
/// for the flight, the area moves on unwritten.
#[test]
fn a_failed_write_fails_every_waiting_completion_in_order_with_no_further_write() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    let chunks: Vec<u64> = (0..4).map(|_| prepare(&s, BIG).unwrap()).collect();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(1, chunks[0]), true, 0));
    for i in 1..4 {
        let r = c.commit_exception(
            &s,
            &mut d,
            ex(1 + u64::from(i), chunks[i as usize]),
            true,
            i,
        );
        assert!(is_queued(&r), "{r:?}");
    }
    let f = c.write_done(&s, w, false);
    assert!(f.next.is_none());
    assert_eq!(f.error, None);
    assert!(!s.get().is_valid());
    let mut flight = f.due.expect("the flight's completion");
    assert_eq!(flight.done, [0]);
    // The open completions come with the next queue given back.
    assert_eq!(c.open().done, [1, 2, 3]);
    assert!(!c.is_idle());
    flight.done.clear();
    let f = c.give_back(&s, flight);
    assert!(f.next.is_none());
    let open = f.due.expect("the open completions");
    assert_eq!(open.done, [1, 2, 3]);
    assert!(c.open().is_empty());
    let (due, next) = take_due(&mut c, &s, open);
    assert_eq!(due, [1, 2, 3]);
    assert!(next.is_none());
    assert!(c.is_idle());
    assert!(d.ops.is_empty());
    // A full area waiting for the flight fails with it, unwritten.
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    let chunks: Vec<u64> = (0..32).map(|_| prepare(&s, BIG).unwrap()).collect();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(1, chunks[0]), true, 0));
    for i in 1..32 {
        let r = c.commit_exception(&s, &mut d, ex(1, chunks[i as usize]), true, i);
        assert!(is_queued(&r), "{r:?}");
    }
    assert_eq!((c.current_area(), c.current_committed()), (0, 32));
    let f = c.write_done(&s, w, false);
    assert!(f.next.is_none());
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    assert_eq!(s.get().current_area(), 1);
    let (due, next) = drain(&mut c, &s, f);
    assert_eq!(due, (0..32).collect::<Vec<u32>>());
    assert!(next.is_none());
    assert!(c.is_idle());
    assert!(d.ops.is_empty());
}

#[test]
fn copy_error_invalidates_and_skips_the_write() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    let a = prepare(&s, BIG).unwrap();
    let b = prepare(&s, BIG).unwrap();
    // Idle: the failed exception's completion is due at once.
    let r = c.commit_exception(&s, &mut d, ex(1, a), false, 0);
    assert!(is_due(&r), "{r:?}");
    assert!(!s.get().is_valid());
    assert_eq!(expect_due(&mut c, &s, r), [0]);
    let r = c.commit_exception(&s, &mut d, ex(2, b), true, 1);
    assert!(is_due(&r), "{r:?}");
    assert_eq!(expect_due(&mut c, &s, r), [1]);
    assert!(d.ops.is_empty());
    assert_eq!(s.get().pending_count(), 0);
    // During a flight: it fails with the flight, which still lands, and
    // the records after it are not written.
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    let chunks: Vec<u64> = (0..3).map(|_| prepare(&s, BIG).unwrap()).collect();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(1, chunks[0]), true, 0));
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(2, chunks[1]),
        false,
        1
    )));
    assert!(!s.get().is_valid());
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(3, chunks[2]),
        true,
        2
    )));
    assert!(issue(&mut d, &w, true));
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!(due, [0, 1, 2]);
    assert!(next.is_none());
    assert!(c.is_idle());
    assert_eq!(writes(&d.ops).len(), 1);
    assert_eq!(on_disk(&d, l, 1, 0), Some(ex(1, 2)));
    assert_eq!(on_disk(&d, l, 1, 1), Some(Exception::default()));
}

#[test]
fn dirty_range_is_rounded_to_the_write_block() {
    let (l, s, mut c) = fresh(32, 4096); // 16 KiB chunk, 1024 per area
    let mut d = new_dev(l, 4);
    // Fill slots 0..300 (offset up to 4800), one write each.
    for i in 0..300u32 {
        let ch = prepare(&s, BIG).unwrap();
        let w = expect_write(c.commit_exception(&s, &mut d, ex(1, ch), true, i));
        let off = i * 16 / 4096 * 4096;
        let aw = *w.write();
        assert_eq!((aw.offset, aw.len), (off, 4096), "slot {i}");
        assert_eq!(aw.sector, 32 + u64::from(off / 512));
        assert_eq!(aw.sectors, 8);
        assert_eq!(w.bytes(), &c.area()[off as usize..off as usize + 4096]);
        assert_eq!(c.dirty_range(), None);
        assert_eq!(settle(&mut c, &s, &mut d, w), [i]);
    }
    for i in 300..(4096 * 2 / 16 - 2) {
        let ch = prepare(&s, BIG).unwrap();
        commit_now(&mut c, &s, &mut d, ex(1, ch), i);
    }
    assert_eq!(c.current_committed(), 510);
    // Two commits in one group across a block boundary: both blocks.
    let chunks: Vec<u64> = (0..3).map(|_| prepare(&s, BIG).unwrap()).collect();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(2, chunks[0]), true, 0));
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(3, chunks[1]),
        true,
        1
    )));
    assert_eq!(c.dirty_range(), Some(4096..8192));
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(4, chunks[2]),
        true,
        2
    )));
    assert_eq!(c.dirty_range(), Some(4096..12288));
    assert!(issue(&mut d, &w, true));
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!(due, [0]);
    let next = next.unwrap();
    let aw = *next.write();
    assert_eq!(
        (aw.offset, aw.len, aw.sector, aw.sectors),
        (4096, 8192, 40, 16)
    );
    assert_eq!(next.bytes(), &c.area()[4096..12288]);
    assert_eq!(c.dirty_range(), None);
    assert_eq!(settle(&mut c, &s, &mut d, next), [1, 2]);
    assert_eq!(on_disk(&d, l, 1, 511), Some(ex(3, chunks[1])));
    assert_eq!(on_disk(&d, l, 1, 512), Some(ex(4, chunks[2])));
    assert_eq!(d.img[chunk_range(l, 1)], *c.area());
}

#[test]
fn whole_chunk_write_block_reproduces_c_writes() {
    let (l, s, mut c) = fresh(8, 4096);
    let mut d = new_dev(l, 10);
    assert_eq!(io_buffer_len(l, lbs(4096)), Some(4096));
    for i in 0..2 {
        let ch = prepare(&s, BIG).unwrap();
        commit_now(&mut c, &s, &mut d, ex(1, ch), i);
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
    let r = c.commit_exception(&s, &mut d, ex(1, 2), true, 0);
    assert!(is_due(&r), "{r:?}");
    assert_eq!(d.reports, [Error::CommitWithoutPrepare]);
    assert!(d.ops.is_empty());
    let sh = s.get();
    assert!(!sh.is_valid());
    assert_eq!(sh.pending_count(), 0);
    assert_eq!(expect_due(&mut c, &s, r), [0]);
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
        let r = c.commit_exception(&s, &mut d, bad, true, 7);
        assert!(is_due(&r), "{why}: due at once, {r:?}");
        assert_eq!(d.reports.len(), 1, "{why}");
        assert!(d.reports[0].errno() > 0, "{why}");
        assert!(d.ops.is_empty(), "{why}: nothing written");
        assert!(!s.get().is_valid(), "{why}: the store is invalid");
        assert_eq!(s.get().pending_count(), 0, "{why}");
        assert_eq!(expect_due(&mut c, &s, r), [7], "{why}");
        assert_eq!(c.current_committed(), 0, "{why}");
        assert!(c.area().iter().all(|b| *b == 0), "{why}: nothing recorded");
    }
}

#[test]
fn a_refused_commit_during_a_flight_fails_with_it_and_holds_nothing_back() {
    // The refused one is consumed (the pending count drops, so dm-snapshot's
    // dtr does not wait for ever) and its completion comes back with the
    // flight, after the one before it.
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    let a = prepare(&s, BIG).unwrap();
    let _b = prepare(&s, BIG).unwrap();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(1, a), true, 0));
    let r = c.commit_exception(&s, &mut d, ex(1, 34), true, 1);
    assert!(is_queued(&r), "{r:?}");
    assert_eq!(
        d.reports,
        [Error::NewChunkIsMetadata {
            area: 0,
            index: 1,
            new_chunk: 34,
            metadata_area: 1
        }]
    );
    assert_eq!(s.get().pending_count(), 0);
    assert!(!s.get().is_valid());
    assert_eq!(c.current_committed(), 1);
    assert!(issue(&mut d, &w, true));
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!(due, [0, 1]);
    assert!(next.is_none());
    assert_eq!(writes(&d.ops).len(), 1);
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
    let r = c.commit_exception(&s, &mut d, ex(1, ch), true, 0);
    assert!(is_due(&r), "{r:?}");
    assert!(d.ops.is_empty());
    assert_eq!(expect_due(&mut c, &s, r), [0]);
}

#[test]
fn a_drop_during_a_flight_stops_the_group_commit() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    let a = prepare(&s, BIG).unwrap();
    let b = prepare(&s, BIG).unwrap();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(1, a), true, 0));
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(2, b),
        true,
        1
    )));
    let _ = s.with(|s| s.drop_snapshot());
    // The write in flight completes, but the store is invalid: both
    // completions are due, and the second record is not written.
    assert!(issue(&mut d, &w, true));
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!(due, [0, 1]);
    assert!(next.is_none());
    assert!(c.is_idle());
    assert_eq!(writes(&d.ops).len(), 1);
}

#[test]
fn invalid_store_is_all_dirty_and_never_merges() {
    let l = layout(1);
    let wb = LogicalBlockSize::SECTOR;
    let (s, mut c) = Committer::new_invalid(l, wb, buffers_with(l, wb, vec![1u8; 512])).unwrap();
    let s = Locked(RefCell::new(s));
    assert!(!s.get().is_valid());
    assert!(c.area().iter().all(|b| *b == 0));
    assert_eq!(c.dirty_range(), Some(0..512));
    let mut d = new_dev(l, 100);
    assert_eq!(c.merger().unwrap().prepare_merge(&s, &mut d), Ok(None));
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
    let r = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
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
        c.merger().unwrap().commit_merge(&s, &mut d, 4),
        Err(Error::MergeCountInvalid {
            nr_merged: 4,
            prepared: 3
        })
    );
    assert_eq!(
        c.merger().unwrap().commit_merge(&s, &mut d, 0),
        Err(Error::MergeCountInvalid {
            nr_merged: 0,
            prepared: 3
        })
    );
    assert!(d.ops.is_empty());
    assert_eq!(c.area(), before);
    assert_eq!(c.current_committed(), 4);
    c.merger().unwrap().commit_merge(&s, &mut d, 2).unwrap();
    assert_eq!(d.ops, [Op::Write(whole(0, 1))]);
    assert_eq!(read_exception(c.area(), 2), Some(Exception::default()));
    assert_eq!(read_exception(c.area(), 3), Some(Exception::default()));
    assert_eq!(read_exception(c.area(), 1), Some(ex(20, 3)));
    assert_eq!(d.img[chunk_range(l, 1)], *c.area());
    assert_eq!(c.current_committed(), 2);
    assert_eq!(s.get().next_free(), 1 + 2 + 1);
    assert_eq!(c.dirty_range(), None);
    // (10,2) does not continue the run of (20,3): a run of 1.
    let r = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
    assert_eq!((r.last_old_chunk, r.last_new_chunk, r.count), (20, 3, 1));
}

#[test]
fn merge_steps_back_to_the_previous_area_after_the_current_empties() {
    let l = layout(1);
    let areas = in_order(l, 33, |k| 500 + k);
    let (s, mut c, mut d) = loaded(l, &areas, 200);
    assert_eq!((c.current_area(), c.current_committed()), (1, 1));
    let r = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
    assert_eq!((r.last_old_chunk, r.last_new_chunk, r.count), (532, 35, 1));
    c.merger().unwrap().commit_merge(&s, &mut d, 1).unwrap();
    assert_eq!(d.ops, [Op::Write(whole(1, 34))]);
    assert_eq!(
        (c.current_area(), c.current_committed(), s.get().next_free()),
        (1, 0, 35)
    );
    // Empty area: read area 0. A failed read leaves the store where it is.
    let io = l.area_io(0).unwrap();
    d.fail_read = true;
    assert_eq!(
        c.merger().unwrap().prepare_merge(&s, &mut d),
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
    let r = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
    assert_eq!(d.ops[2..], [Op::Read(io)]);
    assert_eq!((r.last_old_chunk, r.last_new_chunk, r.count), (531, 33, 32));
    assert_eq!((c.current_area(), c.current_committed()), (0, 32));
    assert_eq!(s.get().current_area(), 0);
    assert_eq!(s.get().usage(BIG).unwrap().metadata_sectors, 2);
    c.merger().unwrap().commit_merge(&s, &mut d, 32).unwrap();
    assert_eq!(d.ops[3..], [Op::Write(whole(0, 1))]);
    assert!(d.img[chunk_range(l, 1)].iter().all(|b| *b == 0));
    assert_eq!((c.current_committed(), s.get().next_free()), (0, 2));
    assert_eq!(c.merger().unwrap().prepare_merge(&s, &mut d), Ok(None));
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
        c.merger().unwrap().prepare_merge(&s, &mut d),
        Err(Error::UnexpectedEndMarker { area: 0, index: 7 })
    );
    assert_eq!(d.ops, [Op::Read(l.area_io(0).unwrap())]);
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    assert_eq!(s.get().current_area(), 1);
    // A new_chunk past the device (200 chunks).
    write_exception(&mut d.img[base..base + 512], 7, ex(1, 250)).unwrap();
    assert!(matches!(
        c.merger().unwrap().prepare_merge(&s, &mut d),
        Err(Error::NewChunkBeyondDevice { .. })
    ));
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    assert_eq!(s.get().current_area(), 1);
    // Repaired, it is accepted.
    write_exception(&mut d.img[base..base + 512], 7, ex(7, 9)).unwrap();
    let r = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
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
        c.merger().unwrap().commit_merge(&s, &mut d, 1),
        Err(Error::MergeCountInvalid {
            nr_merged: 1,
            prepared: 0
        })
    );
    assert!(d.ops.is_empty());
    assert_eq!((c.area().to_vec(), s.get()), before);
    assert_eq!(c.current_committed(), 1);
    let r = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
    assert_eq!(r.count, 1);
    c.merger().unwrap().commit_merge(&s, &mut d, 1).unwrap();
    assert_eq!(d.ops.len(), 1);
    // The run is used up.
    assert_eq!(
        c.merger().unwrap().commit_merge(&s, &mut d, 1),
        Err(Error::MergeCountInvalid {
            nr_merged: 1,
            prepared: 0
        })
    );
    assert_eq!(d.ops.len(), 1);
    assert_eq!(c.merger().unwrap().prepare_merge(&s, &mut d), Ok(None));
}

#[test]
fn failed_merge_write_blocks_further_merging() {
    let l = layout(1);
    let (s, mut c, mut d) = loaded(l, &[vec![ex(1, 2), ex(2, 3)]], 100);
    let _ = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
    d.fail_write = true;
    assert_eq!(
        c.merger().unwrap().commit_merge(&s, &mut d, 2),
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
    let e = c.merger().unwrap().prepare_merge(&s, &mut d).unwrap_err();
    assert_eq!(e, Error::MergeCommitFailed);
    assert_eq!(e.errno(), errno::EIO);
    assert_eq!(
        c.merger().unwrap().commit_merge(&s, &mut d, 1),
        Err(Error::MergeCommitFailed)
    );
    assert_eq!(d.ops.len(), 1);
}

#[test]
fn merger_is_none_while_a_write_is_in_flight() {
    let l = layout(1);
    let (s, mut c, mut d) = loaded(l, &[vec![ex(1, 2)]], 100);
    let ch = prepare(&s, BIG).unwrap();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(2, ch), true, 0));
    assert!(!c.is_idle());
    assert!(c.merger().is_none());
    assert!(issue(&mut d, &w, true));
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!((due, next.is_none()), (vec![0], true));
    assert!(c.is_idle());
    let r = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
    assert_eq!((r.last_old_chunk, r.last_new_chunk, r.count), (2, 3, 2));
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
    let l = layout(1);
    let mut img = store_image(l, 100, &[vec![]]);
    // Garbage after the end marker: the first commit writes the clean-up
    // through the I/O.
    let base = chunk_range(l, 1).start;
    write_exception(&mut img[base..base + 512], 5, ex(9, 40)).unwrap();
    let (s, mut c) = load(&img, l, LogicalBlockSize::SECTOR);
    assert!(c.cleanup_pending());
    let mut d = Unlocked {
        dev: MemDev::new(img),
        lock: &s,
    };
    let chunks: Vec<u64> = (0..33).map(|_| prepare(&s, BIG).unwrap()).collect();
    for (i, ch) in (0..).zip(&chunks) {
        let r = c.commit_exception(&s, &mut d, ex(500 + u64::from(i), *ch), true, i);
        let w = expect_write(r);
        assert!(issue(&mut d.dev, &w, true));
        let (due, next) = complete(&mut c, &s, w, true);
        assert_eq!((due, next.is_none()), (vec![i], true));
    }
    assert!(!c.cleanup_pending());
    // A refusal is reported.
    let _ = prepare(&s, BIG).unwrap();
    let r = c.commit_exception(&s, &mut d, ex(1, 0), true, 99);
    assert!(is_due(&r));
    assert_eq!(expect_due(&mut c, &s, r), [99]);
    assert_eq!(d.dev.reports.len(), 1);
    assert_eq!((c.current_area(), c.current_committed()), (1, 1));
    // Merging back reads and checks area 0.
    let r = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
    c.merger()
        .unwrap()
        .commit_merge(&s, &mut d, r.count)
        .unwrap();
    let r = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
    assert_eq!((r.count, c.current_area()), (32, 0));
    c.merger()
        .unwrap()
        .commit_merge(&s, &mut d, r.count)
        .unwrap();
    let ops = &d.dev.ops;
    assert!(ops.iter().any(|op| matches!(op, Op::Zero(_))));
    assert!(ops.iter().any(|op| matches!(op, Op::Read(_))));
}

#[test]
fn batch_capacity_and_io_buffers_are_an_area_or_max_batch_whichever_is_smaller() {
    assert_eq!(batch_capacity(layout(1)), 32);
    assert_eq!(batch_capacity(layout(8)), 256);
    assert_eq!(batch_capacity(layout(256)), MAX_BATCH); // 128 KiB: 8192 per area
    assert_eq!(batch_capacity(layout(1 << 21)), MAX_BATCH);
    let sector = LogicalBlockSize::SECTOR;
    // A batch's records and a block either side, at most the chunk.
    assert_eq!(io_buffer_len(layout(1), sector), Some(512));
    assert_eq!(io_buffer_len(layout(8), sector), Some(4096));
    assert_eq!(io_buffer_len(layout(256), sector), Some(2048 * 16 + 1024));
    assert_eq!(
        io_buffer_len(layout(256), lbs(4096)),
        Some(2048 * 16 + 8192)
    );
    assert_eq!(
        io_buffer_len(layout(1 << 21), lbs(1 << 20)),
        Some(2048 * 16 + (2 << 20))
    );
    let (l, _, c) = fresh(1024, 512);
    assert_eq!(c.batch_limit(), MAX_BATCH);
    assert_eq!(c.with_batch_limit(0).batch_limit(), 1);
    // Clamped to the queue capacity, below an area here.
    let (_, _, c) = fresh(1024, 512);
    assert_eq!(
        c.with_batch_limit(u32::MAX).batch_limit(),
        batch_capacity(l)
    );
    assert!(batch_capacity(l) < l.exceptions_per_area());
    let (_, _, c) = fresh(1, 512);
    assert_eq!(c.batch_limit(), 32);
}

#[test]
fn a_full_open_batch_waits_for_the_flight_and_changes_nothing() {
    let (l, s, c) = fresh(1, 512);
    let mut c = c.with_batch_limit(2);
    let mut d = new_dev(l, 100);
    let chunks: Vec<u64> = (0..5).map(|_| prepare(&s, BIG).unwrap()).collect();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(10, chunks[0]), true, 0));
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(11, chunks[1]),
        true,
        1
    )));
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(12, chunks[2]),
        true,
        2
    )));
    // Two completions wait for the next write: the limit.
    let state = |c: &TestCommitter| {
        (
            c.area().to_vec(),
            s.get(),
            c.open().clone(),
            c.dirty_range(),
        )
    };
    let before = state(&c);
    let r = c.commit_exception(&s, &mut d, ex(13, chunks[3]), true, 3);
    assert!(matches!(r, Commit::Wait(3)), "{r:?}");
    assert_eq!(state(&c), before);
    assert_eq!(s.get().pending_count(), 2);
    // Once the flight ends, the group of two is written and there is room.
    assert!(issue(&mut d, &w, true));
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!(due, [0]);
    let next = next.unwrap();
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(13, chunks[3]),
        true,
        3
    )));
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(14, chunks[4]),
        true,
        4
    )));
    assert_eq!(settle(&mut c, &s, &mut d, next), [1, 2, 3, 4]);
    assert_eq!(writes(&d.ops).len(), 3);
    assert!(s.get().is_valid());
    assert_eq!(c.current_committed(), 5);
    assert_eq!(on_disk(&d, l, 1, 4), Some(ex(14, chunks[4])));
}

#[test]
fn a_commit_that_waits_is_refused_only_once_retried() {
    // With the open batch full, a commit waits before anything is checked:
    // a refused one is neither reported nor counted until it is retried.
    let (l, s, c) = fresh(1, 512);
    let mut c = c.with_batch_limit(1);
    let mut d = new_dev(l, 100);
    let a = prepare(&s, BIG).unwrap();
    let b = prepare(&s, BIG).unwrap();
    let _x = prepare(&s, BIG).unwrap();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(10, a), true, 0));
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(11, b),
        true,
        1
    )));
    let r = c.commit_exception(&s, &mut d, ex(1, 34), true, 2);
    assert!(matches!(r, Commit::Wait(2)), "{r:?}");
    assert!(d.reports.is_empty());
    assert!(s.get().is_valid());
    assert_eq!(s.get().pending_count(), 1);
    assert!(issue(&mut d, &w, true));
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!(due, [0]);
    let next = next.unwrap();
    // Retried during the next flight: refused, reported, and it fails
    // with that flight, which still lands.
    assert!(is_queued(&c.commit_exception(
        &s,
        &mut d,
        ex(1, 34),
        true,
        2
    )));
    assert!(matches!(d.reports[..], [Error::NewChunkIsMetadata { .. }]));
    assert!(!s.get().is_valid());
    assert_eq!(s.get().pending_count(), 0);
    assert_eq!(settle(&mut c, &s, &mut d, next), [1, 2]);
    assert_eq!(writes(&d.ops).len(), 2);
    assert_eq!(on_disk(&d, l, 1, 1), Some(ex(11, b)));
    assert_eq!(c.current_committed(), 2);
}

#[test]
fn create_zeroes_area_0_before_writing_the_header() {
    let l = layout(1);
    // A COW device with stale records where area 0 goes.
    let mut img = store_image(l, 20, &[vec![ex(1, 2), ex(2, 3)]]);
    img[..512].fill(0);
    let mut d = MemDev::new(img);
    let wb = LogicalBlockSize::SECTOR;
    let (s, c) = Committer::create(&mut d, l, wb, buffers(l, wb)).unwrap();
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
    let wb = LogicalBlockSize::SECTOR;
    let mut d = new_dev(l, 20);
    d.fail_zero = true;
    let err = Committer::create(&mut d, l, wb, buffers(l, wb)).err();
    assert_eq!(err, Some(Error::NewStoreZeroFailed { errno: errno::EIO }));
    assert_eq!(d.ops, vec![Op::Zero(l.area_io(0).unwrap())]);
    assert_eq!(err.unwrap().to_string(), messages::ZERO_DISK_AREA_0_FAILED);

    let mut d = new_dev(l, 20);
    d.fail_header = true;
    let err = Committer::create(&mut d, l, wb, buffers(l, wb)).err();
    assert_eq!(err, Some(Error::NewStoreHeaderFailed { errno: errno::EIO }));
    assert_eq!(err.unwrap().to_string(), messages::WRITE_HEADER_FAILED);

    // A bad buffer is refused before anything is written.
    let mut d = new_dev(l, 20);
    let err = Committer::create(&mut d, l, wb, buffers_with(l, wb, vec![0u8; 100])).err();
    assert!(matches!(err, Some(Error::BufferSize { .. })));
    let mut b = buffers(l, wb);
    b.io = vec![];
    let err = Committer::create(&mut d, l, wb, b).err();
    assert!(matches!(err, Some(Error::BufferSize { .. })));
    assert!(d.ops.is_empty());
}

// ----- scenarios of defects of the earlier two-buffer committer -----

/// Area 0 fills during the flight, so its last write waits for it, and the
/// next commit waits; then the flight fails. Every completion fails and
/// comes back, none is stranded: the flight's from write_done, the open
/// ones from the give_back of its queue, the waiting commit's at once
/// when it is retried. The area moves on, and nothing is written after
/// the failure: neither the full area nor the zeroing of the next.
#[test]
fn a_failed_flight_with_a_full_area_waiting_fails_every_completion() {
    let (l, s, mut c) = fresh(1, 512);
    let mut d = new_dev(l, 100);
    d.img[chunk_range(l, 34)].fill(0xAA);
    let chunks: Vec<u64> = (0..33).map(|_| prepare(&s, BIG).unwrap()).collect();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(1, chunks[0]), true, 0));
    for i in 1..32 {
        let r = c.commit_exception(&s, &mut d, ex(1, chunks[i as usize]), true, i);
        assert!(is_queued(&r), "{r:?}");
    }
    let r = c.commit_exception(&s, &mut d, ex(1, chunks[32]), true, 32);
    assert!(matches!(r, Commit::Wait(32)), "{r:?}");
    assert_eq!(s.get().pending_count(), 1);
    d.fail_write = true;
    assert!(!issue(&mut d, &w, true));
    let (due, next) = complete(&mut c, &s, w, false);
    assert_eq!(due, (0..32).collect::<Vec<u32>>());
    assert!(next.is_none());
    assert!(!s.get().is_valid());
    assert!(c.open().is_empty());
    assert!(c.is_idle());
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    assert_eq!(s.get().current_area(), 1);
    // The retried commit: recorded in area 1, failed at once.
    d.fail_write = false;
    let r = c.commit_exception(&s, &mut d, ex(1, chunks[32]), true, 32);
    assert_eq!(expect_due(&mut c, &s, r), [32]);
    assert_eq!((c.current_area(), c.current_committed()), (1, 1));
    assert_eq!(s.get().pending_count(), 0);
    assert!(c.is_idle());
    // Only the failed write was tried.
    assert_eq!(d.ops, [Op::Write(whole(0, 1))]);
    assert!(d.img[chunk_range(l, 34)].iter().all(|b| *b == 0xAA));
    assert!(d.reports.is_empty());
}

/// The kernel calls due completions after releasing the commit lock, then
/// gives their queue back: a later commit and the next write_done may
/// come first (the next write can complete on another CPU, or inside its
/// submission). One batch is out at a time: the write reported while the
/// first queue is out keeps its completions, counts as in flight (no
/// write is made for the record committed meanwhile, which waits, dirty),
/// and the give_back of the first queue hands them out with the next
/// write. Completions come in commit order; nothing is lost.
#[test]
fn a_write_done_while_a_queue_is_out_hands_its_completions_out_after_it() {
    // 2-sector chunks written in 512-byte blocks: records 31 and 32 are in
    // different blocks.
    let (l, s, mut c) = fresh(2, 512);
    let mut d = new_dev(l, 100);
    let chunks: Vec<u64> = (0..33).map(|_| prepare(&s, BIG).unwrap()).collect();
    let e = |i: u32| ex(100 + u64::from(i), chunks[i as usize]);
    for i in 0..29 {
        commit_now(&mut c, &s, &mut d, e(i), i);
    }
    let a = expect_write(c.commit_exception(&s, &mut d, e(29), true, 29));
    assert!(is_queued(&c.commit_exception(&s, &mut d, e(30), true, 30)));
    assert!(issue(&mut d, &a, true));
    let fa = c.write_done(&s, a, true);
    let mut held_a = fa.due.expect("29's queue");
    assert_eq!(held_a.done, [29]);
    let b = fa.next.expect("the write of 30");
    // A's queue is still out when 31 comes and B completes.
    assert!(is_queued(&c.commit_exception(&s, &mut d, e(31), true, 31)));
    assert!(issue(&mut d, &b, true));
    let fb = c.write_done(&s, b, true);
    assert!(fb.due.is_none(), "30's queue waits for 29's");
    assert!(fb.next.is_none(), "the write of 30 counts as in flight");
    assert_eq!(fb.error, None);
    // Record 31 waits, dirty, with its completion.
    assert_eq!(c.open().done, [31]);
    assert_eq!(c.dirty_range(), Some(0..512));
    assert!(!c.is_idle());
    assert!(c.merger().is_none());
    // Giving A's queue back (its completions called) hands out 30's
    // completion and makes 31's write.
    let mut got = std::mem::take(&mut held_a.done);
    let f = c.give_back(&s, held_a);
    let held_b = f.due.expect("30's queue, from give_back");
    assert_eq!(held_b.done, [30]);
    let w = f.next.expect("the write of 31, from give_back");
    assert_eq!(
        *w.write(),
        AreaWrite {
            area: 0,
            chunk: 1,
            offset: 0,
            len: 512,
            sector: 2,
            sectors: 1
        }
    );
    assert_eq!(read_exception(w.bytes(), 31), Some(e(31)));
    assert_eq!(c.dirty_range(), None);
    let (due, next) = take_due(&mut c, &s, held_b);
    assert!(next.is_none());
    got.extend(due);
    got.extend(settle(&mut c, &s, &mut d, w));
    // The next commit's write covers record 32's block only.
    let w = expect_write(c.commit_exception(&s, &mut d, e(32), true, 32));
    assert_eq!((w.write().offset, w.write().sector), (512, 3));
    got.extend(settle(&mut c, &s, &mut d, w));
    assert_eq!(got, (29..33).collect::<Vec<u32>>());
    assert!(c.is_idle());
    let (_, seen, _) = scan(&d.img, l).unwrap();
    assert_eq!(
        seen,
        (0..33).map(e).collect::<Vec<_>>(),
        "every completed record is on disk"
    );
}

/// As above, but nothing is committed between the two writes: the write
/// reported while the first queue is out keeps the committer busy, a
/// commit coming then is Queued with its record dirty, and the give_back
/// hands out the completions before making its write.
#[test]
fn a_commit_while_a_completed_write_waits_for_the_queue_out_loses_nothing() {
    let (l, s, mut c) = fresh(2, 512);
    let mut d = new_dev(l, 100);
    let chunks: Vec<u64> = (0..33).map(|_| prepare(&s, BIG).unwrap()).collect();
    let e = |i: u32| ex(100 + u64::from(i), chunks[i as usize]);
    for i in 0..30 {
        commit_now(&mut c, &s, &mut d, e(i), i);
    }
    let a = expect_write(c.commit_exception(&s, &mut d, e(30), true, 30));
    assert!(is_queued(&c.commit_exception(&s, &mut d, e(31), true, 31)));
    assert!(issue(&mut d, &a, true));
    let fa = c.write_done(&s, a, true);
    let b = fa.next.unwrap();
    assert!(issue(&mut d, &b, true));
    let fb = c.write_done(&s, b, true);
    assert!(fb.next.is_none() && fb.due.is_none());
    assert!(!c.is_idle(), "31's completion is not handed out yet");
    let held_a = fa.due.unwrap();
    // 30's queue is still out: record 32 comes.
    let r = c.commit_exception(&s, &mut d, e(32), true, 32);
    assert!(is_queued(&r), "{r:?}");
    assert_eq!(c.open().done, [32]);
    assert_eq!(c.dirty_range(), Some(512..1024));
    let (mut got, next) = take_due(&mut c, &s, held_a);
    assert_eq!(got, [30, 31], "30's, then 31's from the give_back");
    let w = next.expect("the write of 32, from give_back");
    assert_eq!((w.write().offset, w.write().sector), (512, 3));
    got.extend(settle(&mut c, &s, &mut d, w));
    assert_eq!(got, (30..33).collect::<Vec<u32>>());
    assert!(c.is_idle());
    let (_, seen, _) = scan(&d.img, l).unwrap();
    assert_eq!(seen, (0..33).map(e).collect::<Vec<_>>());
}

/// with_batch_limit clamps the limit to the queue capacity: with 64 KiB
/// chunks (4096 records per area, queues of 2048) the limit stays 2048,
/// so a full group never overflows its queue. The commit after it waits,
/// unrecorded and unreported, and joins the next write once the flight
/// ends.
#[test]
fn a_batch_limit_above_the_queue_capacity_is_clamped_and_a_full_group_waits() {
    let l = layout(128);
    let wb = LogicalBlockSize::SECTOR;
    let (s, c) = Committer::new_snapshot(l, wb, buffers(l, wb)).unwrap();
    let s = Locked(RefCell::new(s));
    let mut c = c.with_batch_limit(u32::MAX);
    assert_eq!(l.exceptions_per_area(), 4096);
    assert_eq!(c.batch_limit(), batch_capacity(l));
    assert_eq!(c.batch_limit(), 2048);
    let mut d = new_dev(l, 10);
    let cap = batch_capacity(l);
    let n = cap + 2;
    let chunks: Vec<u64> = (0..n).map(|_| prepare(&s, BIG).unwrap()).collect();
    let e = |i: u32| ex(u64::from(i), chunks[i as usize]);
    let w = expect_write(c.commit_exception(&s, &mut d, e(0), true, 0));
    for i in 1..=cap {
        let r = c.commit_exception(&s, &mut d, e(i), true, i);
        assert!(is_queued(&r), "{i}: {r:?}");
    }
    assert_eq!(c.open().len(), cap as usize);
    let before = (
        c.current_committed(),
        s.get(),
        c.dirty_range(),
        c.area().to_vec(),
    );
    let r = c.commit_exception(&s, &mut d, e(cap + 1), true, cap + 1);
    assert!(matches!(r, Commit::Wait(k) if k == cap + 1), "{r:?}");
    assert_eq!(
        (
            c.current_committed(),
            s.get(),
            c.dirty_range(),
            c.area().to_vec()
        ),
        before
    );
    assert!(d.reports.is_empty(), "{:?}", d.reports);
    assert!(s.get().is_valid());
    assert!(issue(&mut d, &w, true));
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!(due, [0]);
    let next = next.expect("the group of 2048");
    let r = c.commit_exception(&s, &mut d, e(cap + 1), true, cap + 1);
    assert!(is_queued(&r), "{r:?}");
    assert_eq!(
        settle(&mut c, &s, &mut d, next),
        (1..n).collect::<Vec<u32>>()
    );
    assert!(d.reports.is_empty());
    assert!(s.get().is_valid());
    assert_eq!(writes(&d.ops).len(), 3);
    assert_eq!(on_disk(&d, l, 1, n - 1), Some(e(n - 1)));
    assert_eq!(d.img[chunk_range(l, 1)], *c.area());
}

// ----- known defects of the committer, reported; un-ignore once fixed -----

/// Merging back into the previous area leaves it full in memory
/// (`current_committed == exceptions_per_area`, as C does), with nothing
/// in flight or waiting: the committer is idle, and the merge goes on
/// with the merge write of that area.
#[test]
fn merging_back_into_a_full_area_keeps_the_merger() {
    let l = layout(1);
    let areas = in_order(l, 32, |k| 100 + k);
    let (s, mut c, mut d) = loaded(l, &areas, 100);
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    let r = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.count, c.current_area(), c.current_committed()),
        (32, 0, 32)
    );
    assert!(c.is_idle(), "nothing in flight or waiting");
    let mut m = c.merger().expect("the merge goes on");
    m.commit_merge(&s, &mut d, 32).unwrap();
    assert_eq!((c.current_area(), c.current_committed()), (0, 0));
    assert!(c.is_idle());
    assert_eq!(
        d.ops,
        [Op::Read(l.area_io(0).unwrap()), Op::Write(whole(0, 1))]
    );
}

/// A completion queue the caller gives back after the merge stepped back
/// into a full area makes no write: that area is on disk already, the
/// area after it holds nothing to zero for, and the merge stays where it
/// is.
#[test]
fn a_queue_given_back_after_merging_back_makes_no_write() {
    let l = layout(1);
    let areas = in_order(l, 32, |k| 100 + k);
    let (s, mut c, mut d) = loaded(l, &areas, 100);
    // One commit into area 1, its completion queue held by the caller.
    let ch = prepare(&s, BIG).unwrap();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(900, ch), true, 0));
    assert!(issue(&mut d, &w, true));
    let f = c.write_done(&s, w, true);
    assert!(f.next.is_none());
    let mut held = f.due.unwrap();
    assert_eq!(held.done, [0]);
    assert!(c.is_idle());
    // Merge it, then step back into area 0.
    let r = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
    assert_eq!(r.count, 1);
    c.merger().unwrap().commit_merge(&s, &mut d, 1).unwrap();
    let r = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.count, c.current_area(), c.current_committed()),
        (32, 0, 32)
    );
    held.done.clear();
    let f = c.give_back(&s, held);
    assert!(f.due.is_none());
    assert!(
        f.next.is_none(),
        "a write made while merging: {:?}",
        f.next.as_ref().map(|w| (w.zero_first(), *w.write()))
    );
    assert_eq!((c.current_area(), c.current_committed()), (0, 32));
    assert_eq!(s.get().current_area(), 0);
}
