// SPDX-License-Identifier: GPL-2.0-only
//! Property tests of the group commit. The store is driven through random
//! sequences of prepare, commit (of any prepared chunk), completion of the
//! write in flight (ok, or failed after or before its zeroing, at any time,
//! possibly after several commits), reload, drop and merge; after every
//! step:
//!
//! - durability: every completion that came back while the store was valid
//!   has its record on disk;
//! - crash safety: the image on disk scans without error or warning, and
//!   its exceptions are a prefix of those committed (in commit order) that
//!   holds every one whose completion came back while valid;
//! - completions come back exactly once each, in commit order, and none is
//!   left waiting once no write is in flight;
//! - once the store was seen invalid (a failed write, a failed exception, a
//!   drop), no write is issued again;
//! - with no write in flight and the store valid, the area on disk equals
//!   the area in memory outside the dirty range;
//! - at quiescence (nothing in flight, waiting or pending) with the store
//!   valid, the image is byte-identical to the image of a small reference
//!   model that transcribes the C algorithm (synchronous, whole-chunk
//!   writes) after the same commits with all I/O ok. The model also runs in
//!   lockstep for the state C keeps in memory (allocation, area position,
//!   area buffer) after every step.
//!
//! Environment: `PROPTEST_CASES` (default 384); `MODEL_STATS` prints what
//! each case reached; `MODEL_LATE_GIVE_BACK` gives the due completion
//! queues back only at a later step, as a kernel store that calls
//! completions outside its lock may.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::manual_is_multiple_of,
    reason = "the reference model spells out the C arithmetic"
)]

mod common;

use common::*;
use proptest::prelude::*;
use snap_format::*;
use std::{cell::RefCell, collections::VecDeque};

// ------------------------------------------------------------------------
// Device of the model
// ------------------------------------------------------------------------

#[derive(Clone, PartialEq, Eq)]
struct Dev {
    img: Vec<u8>,
    chunk_bytes: usize,
}

impl std::fmt::Debug for Dev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dev({} bytes)", self.img.len())
    }
}

impl Dev {
    /// Writes `data` at byte `off`; fails (writing nothing) when `ok` is
    /// false or the range is past the end.
    fn write(&mut self, off: usize, data: &[u8], ok: bool) -> bool {
        if !ok || off + data.len() > self.img.len() {
            return false;
        }
        self.img[off..off + data.len()].copy_from_slice(data);
        true
    }
    fn write_chunk(&mut self, chunk: u64, data: &[u8], ok: bool) -> bool {
        self.write(chunk as usize * self.chunk_bytes, data, ok)
    }
    fn read_chunk(&self, chunk: u64) -> Option<Vec<u8>> {
        let s = chunk as usize * self.chunk_bytes;
        self.img.get(s..s + self.chunk_bytes).map(|b| b.to_vec())
    }
}

// ------------------------------------------------------------------------
// Reference model of dm-snap-persistent.c
// ------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
struct Model {
    epa: u64,
    chunk_sectors: u64,
    valid: bool,
    next_free: u64,
    current_area: u64,
    current_committed: u64,
    pending: u64,
    callbacks: u64,
    /// Flush once this many callbacks are queued (the store's batch
    /// limit; C's rule alone when it is an area's worth or more).
    batch: u64,
    area: Vec<u8>,
}

fn get_e(area: &[u8], i: u64) -> (u64, u64) {
    let o = i as usize * 16;
    (
        u64::from_le_bytes(area[o..o + 8].try_into().unwrap()),
        u64::from_le_bytes(area[o + 8..o + 16].try_into().unwrap()),
    )
}

fn set_e(area: &mut [u8], i: u64, old: u64, new: u64) {
    let o = i as usize * 16;
    area[o..o + 8].copy_from_slice(&old.to_le_bytes());
    area[o + 8..o + 16].copy_from_slice(&new.to_le_bytes());
}

fn model_header(valid: bool, chunk_sectors: u64) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&0x7041_6e53u32.to_le_bytes());
    h.extend_from_slice(&u32::from(valid).to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&(chunk_sectors as u32).to_le_bytes());
    h
}

enum Loaded {
    Invalid(Model),
    Valid(Model, Vec<(u64, u64)>),
}

impl Model {
    fn new(chunk_sectors: u64, valid: bool) -> Self {
        let bytes = chunk_sectors as usize * 512;
        Model {
            epa: bytes as u64 / 16,
            chunk_sectors,
            valid,
            next_free: 2,
            current_area: 0,
            current_committed: 0,
            pending: 0,
            callbacks: 0,
            batch: u64::MAX,
            area: vec![0; bytes],
        }
    }
    fn area_location(&self, area: u64) -> u64 {
        1 + (self.epa + 1) * area
    }
    fn skip_metadata(&mut self) {
        if self.next_free % (self.epa + 1) == 1 {
            self.next_free += 1;
        }
    }
    fn prepare(&mut self, cow_sectors: u64) -> Option<u64> {
        if cow_sectors < (self.next_free + 1) * self.chunk_sectors {
            return None;
        }
        let c = self.next_free;
        self.next_free += 1;
        self.skip_metadata();
        self.pending += 1;
        Some(c)
    }
    /// `persistent_commit_exception`; returns the callbacks run and the
    /// validity passed to them, or `None` if nothing was flushed.
    fn commit(
        &mut self,
        dev: &mut Dev,
        old: u64,
        new: u64,
        valid: bool,
        zero_ok: bool,
        write_ok: bool,
    ) -> Option<(u64, bool)> {
        if !valid {
            self.valid = false;
        }
        set_e(&mut self.area, self.current_committed, old, new);
        self.current_committed += 1;
        self.callbacks += 1;
        self.pending -= 1;
        if self.pending != 0 && self.current_committed != self.epa && self.callbacks < self.batch {
            return None;
        }
        if self.current_committed == self.epa {
            let zeros = vec![0u8; self.area.len()];
            let loc = self.area_location(self.current_area + 1);
            if !dev.write_chunk(loc, &zeros, zero_ok) {
                self.valid = false;
            }
        }
        if self.valid {
            let loc = self.area_location(self.current_area);
            if !dev.write_chunk(loc, &self.area, write_ok) {
                self.valid = false;
            }
        }
        if self.current_committed == self.epa {
            self.current_committed = 0;
            self.current_area += 1;
            self.area.fill(0);
        }
        let n = self.callbacks;
        self.callbacks = 0;
        Some((n, self.valid))
    }
    /// `persistent_prepare_merge`: (count, last_old, last_new).
    fn prepare_merge(&mut self, dev: &Dev) -> (u64, u64, u64) {
        if self.current_committed == 0 {
            if self.current_area == 0 {
                return (0, 0, 0);
            }
            self.current_area -= 1;
            self.area = dev
                .read_chunk(self.area_location(self.current_area))
                .unwrap();
            self.current_committed = self.epa;
        }
        let (lo, ln) = get_e(&self.area, self.current_committed - 1);
        let mut n = 1;
        while n < self.current_committed {
            let (o, w) = get_e(&self.area, self.current_committed - 1 - n);
            if Some(o) != lo.checked_sub(n) || Some(w) != ln.checked_sub(n) {
                break;
            }
            n += 1;
        }
        (n, lo, ln)
    }
    /// `persistent_commit_merge`.
    fn commit_merge(&mut self, dev: &mut Dev, n: u64, ok: bool) -> bool {
        for i in 0..n {
            set_e(&mut self.area, self.current_committed - 1 - i, 0, 0);
        }
        let loc = self.area_location(self.current_area);
        if !dev.write_chunk(loc, &self.area, ok) {
            return false;
        }
        self.current_committed -= n;
        self.next_free = self.area_location(self.current_area) + self.current_committed + 1;
        true
    }
    /// `read_header` + `read_exceptions` on a device this test wrote.
    fn load(dev: &Dev, chunk_sectors: u64) -> Loaded {
        let h = dev.read_chunk(0).unwrap();
        assert_eq!(&h[..4], b"SnAp");
        let valid = u32::from_le_bytes(h[4..8].try_into().unwrap()) != 0;
        let mut m = Model::new(chunk_sectors, valid);
        if !valid {
            return Loaded::Invalid(m);
        }
        let mut seen = vec![];
        loop {
            let a = dev.read_chunk(m.area_location(m.current_area)).unwrap();
            let mut full = true;
            for i in 0..m.epa {
                let (o, n) = get_e(&a, i);
                if n == 0 {
                    m.current_committed = i;
                    full = false;
                    break;
                }
                if m.next_free <= n {
                    m.next_free = n + 1;
                }
                seen.push((o, n));
            }
            if !full {
                m.area = a;
                break;
            }
            m.current_area += 1;
        }
        m.skip_metadata();
        Loaded::Valid(m, seen)
    }
}

// ------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------

/// How the write in flight ends.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// Zeroed (if asked) and written.
    Ok,
    /// Zeroed (if asked), then the write failed: nothing of it landed.
    FailAfterZero,
    /// Failed before anything was written.
    FailBeforeZero,
}

#[derive(Clone, Debug)]
enum Step {
    Prepare,
    Commit {
        pick: usize,
        old: Option<u64>,
        copy_ok: bool,
    },
    Complete(Outcome),
    /// Prepares `n` chunks, then commits as many, in prepare order,
    /// completing nothing: a burst of copies ending together.
    Burst {
        n: usize,
    },
    Reload,
    Drop,
    Merge {
        pick: u32,
        write_ok: bool,
    },
    /// Merges run after run, so that merging reaches back across areas.
    MergeMany {
        picks: Vec<u32>,
    },
    /// Gives back the completion queues held (with `MODEL_LATE_GIVE_BACK`).
    GiveBack,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => Just(Step::Prepare),
        12 => (
            prop_oneof![3 => Just(0usize), 1 => any::<usize>()],
            prop_oneof![Just(None), (0..5000u64).prop_map(Some)],
            prop::bool::weighted(0.99),
        )
            .prop_map(|(pick, old, copy_ok)| Step::Commit { pick, old, copy_ok }),
        8 => prop_oneof![
            94 => Just(Outcome::Ok),
            3 => Just(Outcome::FailAfterZero),
            3 => Just(Outcome::FailBeforeZero),
        ]
        .prop_map(Step::Complete),
        2 => (1usize..48).prop_map(|n| Step::Burst { n }),
        1 => Just(Step::Reload),
        3 => (any::<u32>(), prop::bool::weighted(0.97))
            .prop_map(|(pick, write_ok)| Step::Merge { pick, write_ok }),
        1 => prop::collection::vec(any::<u32>(), 1..96).prop_map(|picks| Step::MergeMany { picks }),
        2 => Just(Step::GiveBack),
    ]
}

/// Whether environment variable `name` is set (to anything).
fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some()
}

struct Harness {
    l: Layout,
    /// The store's batch limit.
    batch: u32,
    model: Model,
    mdev: Dev,
    shared: Locked,
    ours: TestCommitter,
    odev: MemDev,
    /// Prepared, not yet committed chunks, in prepare order.
    pending: Vec<u64>,
    /// Commits answered with `Wait`, retried in order once the flight
    /// ends: (completion, exception, copy ok).
    waiting: VecDeque<(u32, Exception, bool)>,
    /// The write in flight.
    flight: Option<TestWrite>,
    /// Queues whose completions were called but not yet given back (only
    /// with `late`).
    held: Vec<Queue>,
    next_id: u32,
    /// Exceptions recorded, with their completions, in commit order;
    /// merged ones are removed.
    committed: Vec<(u32, Exception)>,
    /// Completions not back yet, in commit order.
    outstanding: VecDeque<u32>,
    /// `committed[..durable]` must be on disk: a completion came back
    /// while the store was valid for the last of them.
    durable: usize,
    /// The store was seen invalid: no write may be made from then on.
    invalid_seen: bool,
    last_old: u64,
    merging: bool,
    merge_failed: bool,
    /// `MODEL_LATE_GIVE_BACK`: due queues are given back only at
    /// [`Step::GiveBack`], as a kernel store calling completions outside
    /// its lock may.
    late: bool,
    /// Whether failures are injected: failed copies and writes. Without
    /// them, every step's outcome is ok.
    faults: bool,
    /// What the run reached, printed with `MODEL_STATS`.
    stats: Stats,
}

/// Counts of the interesting events of a run.
#[derive(Debug, Default)]
struct Stats {
    writes: u32,
    area_fills: u32,
    group_writes: u32,
    waits: u32,
    failed_writes: u32,
    invalid_flushes: u32,
    valid_reloads: u32,
    merges: u32,
    quiescent_compares: u32,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if env_flag("MODEL_STATS") {
            eprintln!("STAT {:?}", self.stats);
        }
    }
}

impl Harness {
    fn new(shift: u32, write_shift: u32, chunks: u64, extra: u64, batch: u32) -> Self {
        let cs = 1u32 << shift;
        let l = common::layout(cs);
        let chunk_bytes = l.chunk_bytes() as usize;
        let sectors = chunks * u64::from(cs) + extra % u64::from(cs);
        // A COW device that was not blanked: old data everywhere.
        let img: Vec<u8> = (0..sectors as usize * 512)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
            .collect();
        // New store, C's way: the header, then area 0 zeroed.
        let mut mdev = Dev {
            img: img.clone(),
            chunk_bytes,
        };
        let mut hdr = model_header(true, u64::from(cs));
        hdr.resize(chunk_bytes, 0);
        assert!(mdev.write_chunk(0, &hdr, true));
        assert!(mdev.write_chunk(1, &vec![0u8; chunk_bytes], true));
        // Ours: area 0 zeroed, then the header.
        let mut odev = MemDev::new(img);
        let wb = LogicalBlockSize::new(512 << write_shift.min(shift)).unwrap();
        let (shared, ours) = Committer::create(&mut odev, l, wb, buffers(l, wb)).unwrap();
        let ours = ours.with_batch_limit(batch);
        Harness {
            l,
            batch,
            model: Model::new(u64::from(cs), true),
            mdev,
            shared: Locked(RefCell::new(shared)),
            ours,
            odev,
            pending: vec![],
            waiting: VecDeque::new(),
            flight: None,
            held: vec![],
            next_id: 0,
            committed: vec![],
            outstanding: VecDeque::new(),
            durable: 0,
            invalid_seen: false,
            last_old: 0,
            merging: false,
            merge_failed: false,
            late: env_flag("MODEL_LATE_GIVE_BACK"),
            faults: true,
            stats: Stats::default(),
        }
    }

    fn valid(&self) -> bool {
        self.shared.get().is_valid()
    }

    /// Nothing in flight, waiting or pending.
    fn quiescent(&self) -> bool {
        self.flight.is_none()
            && self.waiting.is_empty()
            && self.pending.is_empty()
            && self.held.is_empty()
    }

    fn is_data_chunk(&self, c: u64) -> bool {
        c != 0 && (c - 1) % (self.model.epa + 1) != 0
    }

    /// The checks that hold after every step.
    fn check(&mut self) {
        assert!(
            self.odev.reports.is_empty(),
            "the harness commits only valid exceptions: {:?}",
            self.odev.reports
        );
        self.odev.ops.clear();
        let s = self.shared.get();
        if !s.is_valid() {
            self.invalid_seen = true;
        }
        // What C keeps in memory moves in lockstep with the model, but for
        // one lag: a full area whose last write waits for the one in flight
        // is still ours, while C wrote it and moved on.
        let m = &self.model;
        let o = &self.ours;
        let epa = self.l.exceptions_per_area();
        let lag = o.current_committed() == epa && m.current_area == o.current_area() + 1;
        if lag {
            assert!(self.flight.is_some() || !self.held.is_empty());
            assert_eq!(m.current_committed, 0);
        }
        let ours_area = o.current_area() + u64::from(lag);
        assert_eq!(s.next_free(), m.next_free);
        assert_eq!(s.current_area() + u64::from(lag), m.current_area);
        assert_eq!(ours_area, m.current_area);
        if !lag {
            assert_eq!(u64::from(o.current_committed()), m.current_committed);
            assert!(o.area() == m.area, "area buffers differ");
        }
        assert_eq!(u64::from(s.pending_count()), m.pending);
        let u = s.usage(sectors(&self.odev.img)).unwrap();
        assert_eq!(u.sectors_allocated, m.next_free * m.chunk_sectors);
        assert_eq!(
            u.metadata_sectors + u64::from(lag) * m.chunk_sectors,
            (m.current_area + 2) * m.chunk_sectors
        );

        let in_flight = self.flight.is_some();
        if in_flight {
            assert!(!o.is_idle(), "idle with a write in flight");
        } else if self.held.is_empty() {
            assert!(o.is_idle(), "not idle with nothing in flight or held");
        }
        assert!(
            o.open().len() <= o.batch_limit() as usize,
            "a group larger than the batch limit"
        );
        let idle = o.is_idle();
        assert_eq!(self.ours.merger().is_some(), idle);
        // Completions: none is left behind once nothing is in flight or
        // held.
        if !in_flight && self.held.is_empty() && self.waiting.is_empty() {
            assert!(
                self.outstanding.is_empty(),
                "liveness: completions {:?} outstanding with nothing in flight (open {:?}, valid {})",
                self.outstanding,
                self.ours.open().done,
                s.is_valid()
            );
        }

        // Crash safety and durability: the image as a crash now leaves it.
        let (r, seen, _) = common::scan(&self.odev.img, self.l)
            .unwrap_or_else(|e| panic!("crash safety: the image does not scan: {e}"));
        assert_eq!(r.warning, None, "crash safety: records after an end marker");
        assert!(
            seen.len() <= self.committed.len()
                && seen.iter().zip(&self.committed).all(|(a, (_, b))| a == b),
            "crash safety: the image holds {} exceptions that are not a prefix of the {} committed",
            seen.len(),
            self.committed.len()
        );
        assert!(
            seen.len() >= self.durable,
            "durability: {} exceptions on disk, {} completed while valid",
            seen.len(),
            self.durable
        );

        // Outside the dirty range, the area on disk equals memory.
        if idle && s.is_valid() {
            let o = &self.ours;
            let loc = self.l.area_location(o.current_area()).unwrap();
            if let Some(disk) = self.odev.img.get(chunk_range(self.l, loc)) {
                let dirty = o.dirty_range().unwrap_or(0..0);
                for (i, (d, a)) in disk.iter().zip(o.area()).enumerate() {
                    assert!(
                        dirty.contains(&i) || d == a,
                        "byte {i} of area {} outside {dirty:?}",
                        o.current_area()
                    );
                }
            }
        }

        // At quiescence, the image C would have written.
        if self.quiescent() {
            assert!(self.ours.open().is_empty());
            assert_eq!(
                s.is_valid(),
                self.model.valid,
                "validity differs at quiescence"
            );
            if s.is_valid() {
                self.stats.quiescent_compares += 1;
                assert!(
                    self.odev.img == self.mdev.img,
                    "device images differ from the C model's at quiescence"
                );
            }
        }
    }

    fn drop_snapshot(&mut self) {
        let h = self.shared.with(Shared::drop_snapshot);
        let mut buf = vec![0u8; self.l.chunk_bytes() as usize];
        h.encode(&mut buf).unwrap();
        self.odev.img[chunk_range(self.l, 0)].copy_from_slice(&buf);
        self.model.valid = false;
        let mut mbuf = model_header(false, self.model.chunk_sectors);
        mbuf.resize(buf.len(), 0);
        assert!(self.mdev.write_chunk(0, &mbuf, true));
    }

    /// Takes what `f` hands out: the next write goes in flight, the due
    /// completions are called in order and their queue given back (or held,
    /// `late`), until nothing more comes; then the waiting commits retry.
    fn handle(&mut self, mut f: Flushed<Queue, Vec<u8>>) {
        loop {
            assert!(f.error.is_none(), "unexpected error {:?}", f.error);
            if let Some(n) = f.next.take() {
                assert!(self.flight.is_none(), "a second write in flight");
                assert!(
                    !self.invalid_seen && self.valid(),
                    "a write made after the store was invalid"
                );
                self.stats.writes += 1;
                self.stats.group_writes += 1;
                if n.zero_first().is_some() {
                    self.stats.area_fills += 1;
                }
                self.flight = Some(n);
            }
            let Some(b) = f.due.take() else {
                break;
            };
            let Some(b) = self.call(b) else {
                break;
            };
            f = self.ours.give_back(&self.shared, b);
        }
        self.retry_waiting();
    }

    /// Calls the completions of `b` in order; the emptied queue to give
    /// back, or `None` when it is held (`late`).
    fn call(&mut self, mut b: Queue) -> Option<Queue> {
        assert!(self.held.is_empty(), "a batch handed out while one is out");
        if !self.valid() && b.done.len() > 1 {
            self.stats.invalid_flushes += 1;
        }
        for id in b.done.drain(..) {
            assert_eq!(
                self.outstanding.pop_front(),
                Some(id),
                "completions come back once each, in commit order"
            );
            if self.valid() {
                let p = self.committed.iter().rposition(|(i, _)| *i == id).unwrap();
                self.durable = self.durable.max(p + 1);
            } else if self.odev.img[4] != 0 {
                // dm-snapshot invalidates the snapshot on failure.
                self.drop_snapshot();
            }
        }
        if self.late {
            self.held.push(b);
            None
        } else {
            Some(b)
        }
    }

    fn give_back_held(&mut self) {
        while let Some(b) = self.held.pop() {
            let f = self.ours.give_back(&self.shared, b);
            self.handle(f);
        }
    }

    /// Retries, in order, the commits that were told to wait, until one
    /// must wait again.
    fn retry_waiting(&mut self) {
        while let Some((id, e, copy_ok)) = self.waiting.pop_front() {
            if !self.try_commit(id, e, copy_ok) {
                self.waiting.push_front((id, e, copy_ok));
                break;
            }
        }
    }

    /// Commits `e` with completion `id`, as dm-snapshot does once the copy
    /// ended (`copy_ok`). Commits keep their order (kcopyd calls them one
    /// at a time): behind one that waits, a commit waits too.
    fn commit(&mut self, id: u32, e: Exception, copy_ok: bool) {
        if !self.waiting.is_empty() || !self.try_commit(id, e, copy_ok) {
            self.waiting.push_back((id, e, copy_ok));
        }
    }

    /// Tries to commit `e`: false if told to wait.
    fn try_commit(&mut self, id: u32, e: Exception, copy_ok: bool) -> bool {
        let valid = self.valid();
        self.invalid_seen |= !valid;
        let r = self
            .ours
            .commit_exception(&self.shared, &mut self.odev, e, copy_ok, id);
        if let Commit::Wait(done) = r {
            assert_eq!(done, id);
            assert!(
                self.flight.is_some() || !self.held.is_empty(),
                "Wait with nothing in flight or held"
            );
            self.stats.waits += 1;
            assert_eq!(self.valid(), valid, "Wait changes nothing");
            return false;
        }
        let _ = self.model.commit(
            &mut self.mdev,
            e.old_chunk,
            e.new_chunk,
            copy_ok,
            true,
            true,
        );
        self.committed.push((id, e));
        self.outstanding.push_back(id);
        match r {
            Commit::Queued | Commit::Wait(_) => {}
            Commit::Write(w) => {
                assert!(self.flight.is_none(), "a second write in flight");
                assert!(
                    !self.invalid_seen,
                    "a write made after the store was invalid"
                );
                self.stats.writes += 1;
                if w.zero_first().is_some() {
                    self.stats.area_fills += 1;
                }
                self.flight = Some(w);
            }
            Commit::Due(b) => {
                assert!(self.flight.is_none(), "Due with a write in flight");
                assert!(!self.valid(), "Due on a valid store");
                self.handle(Flushed {
                    due: Some(b),
                    next: None,
                    error: None,
                });
            }
            Commit::Failed(_) => panic!("a completion the open queue refused"),
        }
        true
    }

    fn commit_pick(&mut self, pick: usize, old: Option<u64>, copy_ok: bool) {
        if self.pending.is_empty() {
            return;
        }
        let new = self.pending.remove(pick % self.pending.len());
        assert!(self.is_data_chunk(new));
        let old = old.unwrap_or(self.last_old + 1);
        self.last_old = old;
        let id = self.next_id;
        self.next_id += 1;
        self.commit(
            id,
            Exception {
                old_chunk: old,
                new_chunk: new,
            },
            copy_ok,
        );
    }

    /// Ends the write in flight with `outcome`, as the kernel's dm-io
    /// callback does, then retries the commits that waited for it.
    fn complete(&mut self, outcome: Outcome) {
        let Some(w) = self.flight.take() else {
            return;
        };
        self.invalid_seen |= !self.valid();
        let ok = match outcome {
            Outcome::Ok => issue(&mut self.odev, &w, true),
            Outcome::FailAfterZero => issue(&mut self.odev, &w, false),
            Outcome::FailBeforeZero => false,
        };
        let f = self.ours.write_done(&self.shared, w, ok);
        if !ok {
            self.stats.failed_writes += 1;
            assert!(!self.valid(), "a failed write invalidates the store");
            self.invalid_seen = true;
        }
        self.handle(f);
    }

    /// Commits every prepared chunk and completes every write.
    fn drain(&mut self) {
        loop {
            self.give_back_held();
            if self.flight.is_some() {
                self.complete(Outcome::Ok);
            } else if !self.pending.is_empty() {
                self.commit_pick(0, None, true);
            } else {
                break;
            }
            self.check();
        }
        self.give_back_held();
    }

    fn run(&mut self, step: Step) {
        match step {
            Step::Prepare => {
                if self.merging {
                    return;
                }
                let cow = sectors(&self.odev.img);
                let m = self.model.prepare(cow);
                let o = self.shared.with(|s| s.prepare_exception(cow));
                match (m, o) {
                    (Some(a), Ok(b)) => {
                        assert_eq!(a, b);
                        assert!(self.is_data_chunk(b), "allocated chunk {b}");
                        assert!((b + 1) * self.model.chunk_sectors <= cow);
                        self.pending.push(b);
                    }
                    (None, Err(Error::NoSpace { .. })) => {}
                    other => panic!("prepare differs: {other:?}"),
                }
            }
            Step::Commit { pick, old, copy_ok } => {
                self.commit_pick(pick, old, copy_ok || !self.faults);
            }
            Step::Complete(outcome) => {
                self.complete(if self.faults { outcome } else { Outcome::Ok });
            }
            Step::Burst { n } => {
                for _ in 0..n {
                    self.run(Step::Prepare);
                }
                for _ in 0..n {
                    self.commit_pick(0, None, true);
                }
            }
            Step::Drop => self.drop_snapshot(),
            Step::Reload => {
                if self.quiescent() {
                    self.reload();
                }
            }
            Step::Merge { pick, write_ok } => self.merge(pick, write_ok),
            Step::MergeMany { picks } => {
                // A merge starts once the commits in flight are done.
                self.drain();
                for pick in picks {
                    self.merge(pick, true);
                    self.check();
                }
            }
            Step::GiveBack => self.give_back_held(),
        }
    }

    fn reload(&mut self) {
        assert!(self.quiescent());
        let live = self.shared.get();
        let live_area = (self.ours.current_area(), self.ours.current_committed());
        let cs = self.model.chunk_sectors;
        let hdr = self.odev.img[chunk_range(self.l, 0)].to_vec();
        let t = TableChunkSize::new(0, BlockSizes::SECTOR).unwrap();
        let decision = read_header(&hdr, t, BlockSizes::SECTOR, |w| panic!("{w}")).unwrap();
        let l = decision.layout();
        assert_eq!(l, self.l);
        let wb = LogicalBlockSize::SECTOR;
        self.held.clear();
        match (Model::load(&self.mdev, cs), decision) {
            (Loaded::Invalid(m), HeaderDecision::Invalid(_)) => {
                let (shared, ours) = Committer::new_invalid(l, wb, buffers(l, wb)).unwrap();
                self.shared = Locked(RefCell::new(shared));
                self.ours = ours.with_batch_limit(self.batch);
                self.model = m;
            }
            (Loaded::Valid(m, seen), HeaderDecision::Valid(_)) => {
                let (r, ours_seen, area) = common::scan(&self.odev.img, l).unwrap();
                assert_eq!(r.warning, None);
                let pairs: Vec<(u64, u64)> = ours_seen
                    .iter()
                    .map(|e| (e.old_chunk, e.new_chunk))
                    .collect();
                assert_eq!(pairs, seen);
                let committed: Vec<Exception> = self.committed.iter().map(|(_, e)| *e).collect();
                assert_eq!(ours_seen, committed, "exception set after reload");
                let (shared, ours) =
                    Committer::from_scan(l, wb, &r, buffers_with(l, wb, area)).unwrap();
                self.shared = Locked(RefCell::new(shared));
                self.ours = ours.with_batch_limit(self.batch);
                self.model = m;
                self.stats.valid_reloads += 1;
                assert!(live.is_valid());
                // A merge that read back a full area holds (k, epa), which
                // is what a scan calls (k + 1, 0).
                let epa = self.l.exceptions_per_area();
                let live_pos = if live_area.1 == epa {
                    (live_area.0 + 1, 0)
                } else {
                    live_area
                };
                assert_eq!(
                    live_pos,
                    (self.ours.current_area(), self.ours.current_committed())
                );
                if !self.merging {
                    assert_eq!(live.next_free(), self.shared.get().next_free());
                }
            }
            _ => panic!("header decisions differ"),
        }
        self.merging = false;
        self.merge_failed = false;
    }

    fn merge(&mut self, pick: u32, write_ok: bool) {
        if self.flight.is_some() {
            assert!(
                self.ours.merger().is_none(),
                "a merger while a write is in flight"
            );
            return;
        }
        if !self.quiescent() || !self.valid() {
            return;
        }
        if self.merge_failed {
            assert_eq!(
                self.ours
                    .merger()
                    .unwrap()
                    .prepare_merge(&self.shared, &mut self.odev),
                Err(Error::MergeCommitFailed)
            );
            return;
        }
        self.merging = true;
        let (count, lo, ln) = self.model.prepare_merge(&self.mdev);
        let run = self
            .ours
            .merger()
            .unwrap()
            .prepare_merge(&self.shared, &mut self.odev)
            .unwrap();
        let Some(run) = run else {
            assert_eq!(count, 0);
            assert!(self.committed.is_empty());
            return;
        };
        assert_eq!(
            (u64::from(run.count), run.last_old_chunk, run.last_new_chunk),
            (count, lo, ln)
        );
        assert_eq!(
            self.committed
                .last()
                .map(|(_, e)| (e.old_chunk, e.new_chunk)),
            Some((lo, ln))
        );
        let n = 1 + pick % run.count;
        self.odev.fail_write = !write_ok;
        let r = self
            .ours
            .merger()
            .unwrap()
            .commit_merge(&self.shared, &mut self.odev, n);
        self.odev.fail_write = false;
        let ok = match r {
            Ok(()) => true,
            Err(Error::WriteFailed { .. }) => false,
            Err(e) => panic!("commit_merge: {e}"),
        };
        assert_eq!(
            self.model
                .commit_merge(&mut self.mdev, u64::from(n), write_ok),
            ok
        );
        if ok {
            self.stats.merges += 1;
            let keep = self.committed.len() - n as usize;
            self.committed.truncate(keep);
            self.durable = self.durable.min(keep);
        } else {
            self.merge_failed = true;
        }
    }
}

/// Cases per property: 384, or `PROPTEST_CASES` for longer runs.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(384)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn group_commit_is_durable_crash_safe_and_ends_as_the_c_model(
        shift in prop_oneof![3 => Just(0u32), 1 => 0u32..4],
        write_shift in 0u32..4,
        chunks in 2u64..300,
        extra in 0u64..8,
        drop_at in prop::option::weighted(0.2, 0usize..200),
        steps in prop::collection::vec(step(), 1..400),
        batch in prop_oneof![2 => Just(u32::MAX), 1 => 1u32..6],
        faults in prop::bool::ANY,
    ) {
        let mut h = Harness::new(shift, write_shift, chunks, extra, batch);
        h.faults = faults;
        h.check();
        for (i, s) in steps.into_iter().enumerate() {
            if faults && drop_at == Some(i) {
                h.run(Step::Drop);
                h.check();
            }
            h.run(s);
            h.check();
        }
        // Finish: commit what is pending, complete every write, then a
        // final reload round trip.
        h.drain();
        h.check();
        prop_assert!(h.outstanding.is_empty());
        h.run(Step::Reload);
        h.check();
    }

    #[test]
    fn merging_back_across_areas_matches_the_c_model(
        shift in 0u32..2,
        write_shift in 0u32..2,
        commits in 1usize..200,
        depth in 1usize..8,
        every in 1usize..5,
        reload in prop::bool::ANY,
        picks in prop::collection::vec(any::<u32>(), 1..400),
    ) {
        // Enough room for every exception: a store that fills its areas,
        // without injected failures, its writes completed after every
        // `every` commits, then merged back run by run through merger().
        let mut h = Harness::new(shift, write_shift, 300, 0, u32::MAX);
        let mut left = commits;
        while left > 0 {
            let n = depth.min(left);
            for _ in 0..n {
                h.run(Step::Prepare);
            }
            for k in 0..n {
                h.run(Step::Commit { pick: 0, old: None, copy_ok: true });
                if k % every == every - 1 {
                    h.run(Step::Complete(Outcome::Ok));
                }
                h.check();
            }
            left -= n;
        }
        h.drain();
        h.check();
        if reload {
            h.run(Step::Reload);
            h.check();
        }
        h.run(Step::MergeMany { picks });
        h.check();
    }

    #[test]
    fn scan_of_random_bytes_never_panics_and_only_reports_valid_exceptions(
        shift in 0u32..3,
        bytes in prop::collection::vec(any::<u8>(), 0..6000),
        sparse in prop::bool::ANY,
    ) {
        let l = common::layout(1 << shift);
        let mut img = bytes;
        if sparse {
            // Mostly-zero images reach partial areas more often.
            for (i, b) in img.iter_mut().enumerate() {
                if i % 16 >= 8 && i % 7 != 0 {
                    *b = 0;
                }
            }
        }
        let cow_chunks = l.device_chunks(img.len() as u64 / 512);
        match common::scan(&img, l) {
            Ok((r, seen, mut area)) => {
                for e in &seen {
                    prop_assert!(l.is_data_chunk(e.new_chunk));
                    prop_assert!(e.new_chunk < cow_chunks);
                    prop_assert!(e.old_chunk <= l.max_old_chunk());
                }
                prop_assert!(!l.is_metadata_chunk(r.next_free));
                area.resize(l.chunk_bytes() as usize, 0);
                let wb = LogicalBlockSize::SECTOR;
                prop_assert!(Committer::from_scan(l, wb, &r, buffers_with(l, wb, area)).is_ok());
            }
            Err(e) => prop_assert!(e.errno() > 0),
        }
    }
}
