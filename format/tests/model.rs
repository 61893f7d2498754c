// SPDX-License-Identifier: GPL-2.0-only
//! Property tests: the store, driven through random prepare / commit /
//! reload / drop / merge sequences with injected I/O failures, must match a
//! small reference model that transcribes the C algorithm with plain
//! arithmetic and whole-chunk writes. After every operation the states, the
//! in-memory areas and the device images must be identical, which also
//! shows that writing only dirty blocks stores the same bytes as C.

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
use std::cell::RefCell;

/// An empty completion queue of the capacity the kernel store gives it.
fn queue(l: Layout) -> Queue {
    Queue::with_capacity(batch_capacity(l) as usize)
}

// ------------------------------------------------------------------------
// Device
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
    fn sectors(&self) -> u64 {
        self.img.len() as u64 / 512
    }
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

/// Our store's view of a [`Dev`]: the metadata I/O, with the outcome of
/// the next zeroing and area write chosen by the test.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OursDev {
    dev: Dev,
    zero_ok: bool,
    write_ok: bool,
}

impl MetadataIo for OursDev {
    type Area = Vec<u8>;
    fn cow_sectors(&self) -> u64 {
        self.dev.sectors()
    }
    fn read_area(&mut self, io: AreaIo, area: &mut Vec<u8>) -> Result<(), IoError> {
        let data = self.dev.read_chunk(io.chunk).ok_or(IoError(5))?;
        area.copy_from_slice(&data);
        Ok(())
    }
    fn write_area(&mut self, w: &AreaWrite, area: &Vec<u8>) -> Result<(), IoError> {
        let ok = self.write_ok;
        let bytes = w.bytes(area).ok_or(IoError(22))?;
        if self.dev.write(w.sector as usize * 512, bytes, ok) {
            Ok(())
        } else {
            Err(IoError(5))
        }
    }
    fn zero_area(&mut self, io: AreaIo) -> Result<(), IoError> {
        let zeros = vec![0u8; io.sectors as usize * 512];
        let ok = self.dev.write_chunk(io.chunk, &zeros, self.zero_ok);
        if std::env::var_os("MODEL_STATS").is_some() {
            eprintln!(
                "STAT zero ok={ok} on_device={}",
                self.dev.read_chunk(io.chunk).is_some()
            );
        }
        if ok {
            Ok(())
        } else {
            Err(IoError(5))
        }
    }
    fn write_header(&mut self, header: DiskHeader) -> Result<(), IoError> {
        let mut chunk = vec![0u8; self.dev.chunk_bytes];
        header.encode(&mut chunk).unwrap();
        if self.dev.write_chunk(0, &chunk, true) {
            Ok(())
        } else {
            Err(IoError(5))
        }
    }
    fn report(&mut self, error: &Error) {
        panic!("the model commits only valid exceptions: {error}");
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

#[derive(Clone, Debug)]
enum Op {
    Prepare,
    Commit {
        pick: usize,
        old: Option<u64>,
        copy_ok: bool,
        zero_ok: bool,
        write_ok: bool,
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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => Just(Op::Prepare),
        12 => (
            prop_oneof![3 => Just(0usize), 1 => any::<usize>()],
            prop_oneof![Just(None), (0..5000u64).prop_map(Some)],
            prop::bool::weighted(0.98),
            prop::bool::weighted(0.85),
            prop::bool::weighted(0.97),
        )
            .prop_map(|(pick, old, copy_ok, zero_ok, write_ok)| Op::Commit {
                pick,
                old,
                copy_ok,
                zero_ok,
                write_ok
            }),
        1 => Just(Op::Reload),
        4 => (any::<u32>(), prop::bool::weighted(0.97))
            .prop_map(|(pick, write_ok)| Op::Merge { pick, write_ok }),
        1 => prop::collection::vec(any::<u32>(), 1..96).prop_map(|picks| Op::MergeMany { picks }),
    ]
}

struct Harness {
    l: Layout,
    model: Model,
    mdev: Dev,
    shared: Locked,
    ours: TestCommitter,
    odev: OursDev,
    /// Prepared, not yet committed chunks, in prepare order.
    pending: Vec<u64>,
    /// Exceptions committed (and, while valid, on disk), in order.
    committed: Vec<(u64, u64)>,
    last_old: u64,
    merging: bool,
    merge_failed: bool,
}

impl Harness {
    fn new(shift: u32, write_shift: u32, chunks: u64, extra: u64, batch: u32) -> Self {
        let cs = 1u32 << shift;
        let l = common::layout(cs);
        let chunk_bytes = l.chunk_bytes() as usize;
        let sectors = chunks * u64::from(cs) + extra % u64::from(cs);
        // A COW device that was not blanked: old data everywhere.
        let img = (0..sectors as usize * 512)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
            .collect();
        let dev = Dev { img, chunk_bytes };
        // New store, C's way: the header, then area 0 zeroed.
        let mut mdev = dev.clone();
        let mut hdr = model_header(true, u64::from(cs));
        hdr.resize(chunk_bytes, 0);
        assert!(mdev.write_chunk(0, &hdr, true));
        assert!(mdev.write_chunk(1, &vec![0u8; chunk_bytes], true));
        // Ours: area 0 zeroed, then the header.
        let mut odev = OursDev {
            dev,
            zero_ok: true,
            write_ok: true,
        };
        let wb = LogicalBlockSize::new(512 << write_shift.min(shift)).unwrap();
        let (shared, ours) = Committer::create(&mut odev, l, wb, area_buffer(l), queue(l)).unwrap();
        let ours = ours.with_batch_limit(batch);
        let mut model = Model::new(u64::from(cs), true);
        model.batch = u64::from(ours.batch_limit());
        Harness {
            l,
            model,
            mdev,
            shared: Locked(RefCell::new(shared)),
            ours,
            odev,
            pending: vec![],
            committed: vec![],
            last_old: 0,
            merging: false,
            merge_failed: false,
        }
    }

    fn check_same(&self) {
        let (m, o, s) = (&self.model, &self.ours, self.shared.get());
        assert_eq!(s.is_valid(), m.valid);
        assert_eq!(s.next_free(), m.next_free);
        assert_eq!(s.current_area(), m.current_area);
        assert_eq!(o.current_area(), m.current_area);
        assert_eq!(u64::from(o.current_committed()), m.current_committed);
        assert_eq!(u64::from(s.pending_count()), m.pending);
        assert_eq!(o.batch().len() as u64, m.callbacks);
        assert!(o.area() == m.area, "area buffers differ");
        assert!(self.odev.dev == self.mdev, "device images differ");
        let u = s.usage(self.odev.dev.sectors()).unwrap();
        assert_eq!(u.sectors_allocated, m.next_free * m.chunk_sectors);
        assert_eq!(u.metadata_sectors, (m.current_area + 2) * m.chunk_sectors);
        // Outside the dirty range, the area on disk equals memory.
        let loc = self.l.area_location(o.current_area()).unwrap();
        if let Some(disk) = self.odev.dev.read_chunk(loc) {
            let dirty = o.dirty_range().unwrap_or(0..0);
            for (i, (d, a)) in disk.iter().zip(o.area()).enumerate() {
                if !dirty.contains(&i) {
                    assert_eq!(
                        d,
                        a,
                        "byte {i} of area {} outside {dirty:?}",
                        o.current_area()
                    );
                }
            }
        }
    }

    fn drop_snapshot(&mut self) {
        let h = self.shared.with(Shared::drop_snapshot);
        let mut buf = vec![0u8; self.l.chunk_bytes() as usize];
        h.encode(&mut buf).unwrap();
        assert!(self.odev.dev.write_chunk(0, &buf, true));
        self.model.valid = false;
        let mut mbuf = model_header(false, self.model.chunk_sectors);
        mbuf.resize(buf.len(), 0);
        assert!(self.mdev.write_chunk(0, &mbuf, true));
    }

    fn is_data_chunk(&self, c: u64) -> bool {
        c != 0 && (c - 1) % (self.model.epa + 1) != 0
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Prepare => {
                if self.merging {
                    return;
                }
                let cow = self.odev.dev.sectors();
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
            Op::Commit {
                pick,
                old,
                copy_ok,
                zero_ok,
                write_ok,
            } => {
                if self.pending.is_empty() {
                    return;
                }
                let new = self.pending.remove(pick % self.pending.len());
                let old = old.unwrap_or(self.last_old + 1);
                self.last_old = old;
                let e = Exception {
                    old_chunk: old,
                    new_chunk: new,
                };
                assert!(self.is_data_chunk(new));
                let expect =
                    self.model
                        .commit(&mut self.mdev, old, new, copy_ok, zero_ok, write_ok);
                self.odev.zero_ok = zero_ok;
                self.odev.write_ok = write_ok;
                let done = self.committed.len() as u32;
                let got =
                    match self
                        .ours
                        .commit_exception(&self.shared, &mut self.odev, e, copy_ok, done)
                    {
                        Commit::Queued => None,
                        Commit::Due => {
                            let batch = self.ours.replace_batch(queue(self.l));
                            Some((batch.len() as u64, self.shared.get().is_valid()))
                        }
                        Commit::Unqueued { .. } => panic!("the queue holds a batch"),
                    };
                assert_eq!(got, expect);
                self.committed.push((old, new));
                if let Some((_, false)) = got {
                    // dm-snapshot invalidates the snapshot on failure.
                    if self.shared.get().is_valid() || self.odev.dev.read_chunk(0).unwrap()[4] != 0
                    {
                        self.drop_snapshot();
                    }
                }
            }
            Op::Drop => self.drop_snapshot(),
            Op::Reload => {
                if !self.pending.is_empty() {
                    return;
                }
                self.reload();
            }
            Op::Merge { pick, write_ok } => self.merge(pick, write_ok),
            Op::MergeMany { picks } => {
                // A merge starts once the commits in flight are done.
                while !self.pending.is_empty() {
                    self.run(Op::Commit {
                        pick: 0,
                        old: None,
                        copy_ok: true,
                        zero_ok: true,
                        write_ok: true,
                    });
                    self.check_same();
                }
                for pick in picks {
                    self.merge(pick, true);
                    self.check_same();
                }
            }
        }
    }

    fn reload(&mut self) {
        let live = self.shared.get();
        let live_area = (self.ours.current_area(), self.ours.current_committed());
        let cs = self.model.chunk_sectors;
        let hdr = self.odev.dev.read_chunk(0).unwrap();
        let t = TableChunkSize::new(0, BlockSizes::SECTOR).unwrap();
        let decision = read_header(&hdr, t, BlockSizes::SECTOR, |w| panic!("{w}")).unwrap();
        let l = decision.layout();
        assert_eq!(l, self.l);
        let wb = LogicalBlockSize::SECTOR;
        let mut area = area_buffer(l);
        let batch = self.ours.batch_limit();
        match (Model::load(&self.mdev, cs), decision) {
            (Loaded::Invalid(m), HeaderDecision::Invalid(_)) => {
                let (shared, ours) = Committer::new_invalid(l, wb, area, queue(l)).unwrap();
                self.shared = Locked(RefCell::new(shared));
                self.ours = ours.with_batch_limit(batch);
                self.model = Model {
                    batch: u64::from(batch),
                    ..m
                };
            }
            (Loaded::Valid(m, seen), HeaderDecision::Valid(_)) => {
                let mut ours_seen = vec![];
                let img = &self.odev.dev;
                let r = scan_areas(
                    l,
                    img.sectors(),
                    &mut area,
                    |c, buf| {
                        buf.copy_from_slice(&img.read_chunk(c).ok_or(5)?);
                        Ok(())
                    },
                    |e| {
                        ours_seen.push((e.old_chunk, e.new_chunk));
                        Ok(())
                    },
                )
                .unwrap();
                assert_eq!(r.warning, None);
                if std::env::var_os("MODEL_STATS").is_some() {
                    eprintln!("STAT reload valid areas>0={}", r.current_area > 0);
                }
                assert_eq!(ours_seen, seen);
                assert_eq!(ours_seen, self.committed, "exception set after reload");
                let (shared, ours) = Committer::from_scan(l, wb, &r, area, queue(l)).unwrap();
                self.shared = Locked(RefCell::new(shared));
                self.ours = ours.with_batch_limit(batch);
                self.model = Model {
                    batch: u64::from(batch),
                    ..m
                };
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
        if !self.pending.is_empty() || !self.model.valid {
            return;
        }
        if self.merge_failed {
            assert_eq!(
                self.ours.prepare_merge(&self.shared, &mut self.odev),
                Err(Error::MergeCommitFailed)
            );
            return;
        }
        self.merging = true;
        let (count, lo, ln) = self.model.prepare_merge(&self.mdev);
        let run = self
            .ours
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
        assert_eq!(self.committed.last(), Some(&(lo, ln)));
        let n = 1 + pick % run.count;
        if std::env::var_os("MODEL_STATS").is_some() {
            eprintln!(
                "STAT merge area_read={} run>1={}",
                self.ours.current_committed() == self.l.exceptions_per_area(),
                run.count > 1
            );
        }
        self.odev.write_ok = write_ok;
        let ok = match self.ours.commit_merge(&self.shared, &mut self.odev, n) {
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
            let keep = self.committed.len() - n as usize;
            self.committed.truncate(keep);
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
    fn store_matches_the_c_model_through_commits_reloads_and_merges(
        shift in prop_oneof![3 => Just(0u32), 1 => 0u32..4],
        write_shift in 0u32..4,
        chunks in 2u64..300,
        extra in 0u64..8,
        drop_at in prop::option::weighted(0.2, 0usize..200),
        ops in prop::collection::vec(op(), 1..400),
        batch in prop_oneof![2 => Just(u32::MAX), 1 => 1u32..6],
    ) {
        let mut h = Harness::new(shift, write_shift, chunks, extra, batch);
        h.check_same();
        for (i, o) in ops.into_iter().enumerate() {
            if drop_at == Some(i) {
                h.run(Op::Drop);
                h.check_same();
            }
            h.run(o);
            h.check_same();
        }
        // Finish: commit what is pending, then a final reload round trip.
        while !h.pending.is_empty() {
            h.run(Op::Commit { pick: 0, old: None, copy_ok: true, zero_ok: true, write_ok: true });
            h.check_same();
        }
        h.run(Op::Reload);
        h.check_same();
    }

    #[test]
    fn merging_back_across_areas_matches_the_c_model(
        shift in 0u32..2,
        write_shift in 0u32..2,
        commits in 1usize..200,
        depth in 1usize..8,
        reload in prop::bool::ANY,
        picks in prop::collection::vec(any::<u32>(), 1..400),
    ) {
        // Enough room for every exception: a store that fills its areas,
        // without injected failures, then is merged back run by run.
        let mut h = Harness::new(shift, write_shift, 300, 0, u32::MAX);
        let mut left = commits;
        while left > 0 {
            let n = depth.min(left);
            for _ in 0..n {
                h.run(Op::Prepare);
            }
            for _ in 0..n {
                h.run(Op::Commit { pick: 0, old: None, copy_ok: true, zero_ok: true, write_ok: true });
                h.check_same();
            }
            left -= n;
        }
        if reload {
            h.run(Op::Reload);
            h.check_same();
        }
        h.run(Op::MergeMany { picks });
        h.check_same();
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
                prop_assert!(Committer::from_scan(l, LogicalBlockSize::SECTOR, &r, area, queue(l)).is_ok());
            }
            Err(e) => prop_assert!(e.errno() > 0),
        }
    }
}
