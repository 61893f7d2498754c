// SPDX-License-Identifier: GPL-2.0-only
//! Helpers shared by the integration tests: building COW images in memory.

#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use snap_format::*;
use std::cell::RefCell;

/// Layout for a chunk size in sectors (512-byte blocks).
pub fn layout(sectors: u32) -> Layout {
    Layout::new(ChunkSize::new(sectors, BlockSizes::SECTOR).unwrap())
}

/// A zeroed image of `chunks` chunks.
pub fn image(l: Layout, chunks: u64) -> Vec<u8> {
    vec![0u8; usize::try_from(chunks * u64::from(l.chunk_bytes())).unwrap()]
}

/// Byte range of chunk `c` in an image.
pub fn chunk_range(l: Layout, c: u64) -> std::ops::Range<usize> {
    let b = usize::try_from(l.chunk_bytes()).unwrap();
    let s = usize::try_from(c).unwrap() * b;
    s..s + b
}

/// Writes a header into chunk 0.
pub fn put_header(img: &mut [u8], l: Layout, h: DiskHeader) {
    h.encode(&mut img[chunk_range(l, 0)]).unwrap();
}

/// Writes the exceptions of area `area` (and zeroes the rest of it).
pub fn put_area(img: &mut [u8], l: Layout, area: u64, es: &[Exception]) {
    let r = chunk_range(l, l.area_location(area).unwrap());
    let a = &mut img[r];
    a.fill(0);
    for (i, e) in es.iter().enumerate() {
        write_exception(a, u32::try_from(i).unwrap(), *e).unwrap();
    }
}

/// Exceptions of a store written in order: exception k (0-based) uses the
/// k-th data chunk and origin chunk `old(k)`.
pub fn in_order(l: Layout, n: u64, old: impl Fn(u64) -> u64) -> Vec<Vec<Exception>> {
    let epa = u64::from(l.exceptions_per_area());
    let mut areas: Vec<Vec<Exception>> = vec![vec![]];
    let mut next = INITIAL_NEXT_FREE;
    for k in 0..n {
        if areas.last().unwrap().len() as u64 == epa {
            areas.push(vec![]);
        }
        areas.last_mut().unwrap().push(Exception {
            old_chunk: old(k),
            new_chunk: next,
        });
        next = l.skip_metadata(next + 1).unwrap();
    }
    if areas.last().unwrap().len() as u64 == epa {
        areas.push(vec![]);
    }
    areas
}

/// An image with a valid header and the given areas.
pub fn store_image(l: Layout, chunks: u64, areas: &[Vec<Exception>]) -> Vec<u8> {
    let mut img = image(l, chunks);
    put_header(&mut img, l, DiskHeader::new(true, l.chunk_size()));
    for (i, a) in areas.iter().enumerate() {
        put_area(&mut img, l, i as u64, a);
    }
    img
}

/// Sectors of an image.
pub fn sectors(img: &[u8]) -> u64 {
    img.len() as u64 / 512
}

/// Reads chunk `c` of `img` into `buf` (an error past the end).
pub fn read_chunk(img: &[u8], l: Layout, c: u64, buf: &mut [u8]) -> Result<(), i32> {
    let r = chunk_range(l, c);
    match img.get(r) {
        Some(src) => {
            buf.copy_from_slice(src);
            Ok(())
        }
        None => Err(errno::EIO),
    }
}

/// Scans an image; returns the result, the exceptions in order and the
/// area buffer holding the last area.
pub fn scan(img: &[u8], l: Layout) -> Result<(ScanResult, Vec<Exception>, Vec<u8>), Error> {
    let mut area = vec![0u8; usize::try_from(l.chunk_bytes()).unwrap()];
    let mut seen = vec![];
    let r = scan_areas(
        l,
        sectors(img),
        &mut area,
        |c, buf| read_chunk(img, l, c, buf),
        |e| {
            seen.push(e);
            Ok(())
        },
    )?;
    Ok((r, seen, area))
}

/// The "spinlock" of a store under test.
#[derive(Debug)]
pub struct Locked(pub RefCell<Shared>);

impl SharedLock for Locked {
    fn with<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

impl Locked {
    /// A copy of the state.
    pub fn get(&self) -> Shared {
        self.0.borrow().clone()
    }
}

/// Completions: numbers, queued up to a capacity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Queue {
    pub done: Vec<u32>,
    pub cap: usize,
}

impl Queue {
    pub fn with_capacity(cap: usize) -> Self {
        Self { done: vec![], cap }
    }
}

impl Batch for Queue {
    type Completion = u32;
    fn push(&mut self, done: u32) -> Result<(), u32> {
        if self.done.len() >= self.cap {
            return Err(done);
        }
        self.done.push(done);
        Ok(())
    }
    fn len(&self) -> usize {
        self.done.len()
    }
}

/// A store under test: its committer, with its area, completion queues and
/// I/O buffers in vectors.
pub type TestCommitter = Committer<Vec<u8>, Queue, Vec<u8>>;

/// A commit write of a [`TestCommitter`].
pub type TestWrite = CommitWrite<Vec<u8>>;

/// What [`Committer::commit_exception`] returns for a [`TestCommitter`].
pub type TestCommit = Commit<Queue, u32, Vec<u8>>;

/// One metadata I/O of [`MemDev`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Read(AreaIo),
    Write(AreaWrite),
    Zero(AreaIo),
    Header(DiskHeader),
}

/// An in-memory COW device: the image, the I/O done on it, what was
/// reported, and failures to inject (each applies to every call of its
/// kind until reset; a failed call writes nothing).
#[derive(Clone, Debug, Default)]
pub struct MemDev {
    pub img: Vec<u8>,
    pub ops: Vec<Op>,
    pub reports: Vec<Error>,
    pub fail_read: bool,
    pub fail_write: bool,
    pub fail_zero: bool,
    pub fail_header: bool,
}

impl MemDev {
    pub fn new(img: Vec<u8>) -> Self {
        Self {
            img,
            ..Self::default()
        }
    }

    /// The bytes of `sectors` sectors from `sector`, if on the image.
    pub fn range(&self, sector: u64, sectors: u32) -> Option<std::ops::Range<usize>> {
        let s = usize::try_from(sector * 512).ok()?;
        let e = s + usize::try_from(sectors).ok()? * 512;
        (e <= self.img.len()).then_some(s..e)
    }
}

impl MetadataIo for MemDev {
    type Area = Vec<u8>;
    fn cow_sectors(&self) -> u64 {
        sectors(&self.img)
    }
    fn read_area(&mut self, io: AreaIo, area: &mut Vec<u8>) -> Result<(), IoError> {
        self.ops.push(Op::Read(io));
        match self.range(io.sector, io.sectors) {
            Some(r) if !self.fail_read && r.len() == area.len() => {
                area.copy_from_slice(&self.img[r]);
                Ok(())
            }
            _ => Err(IoError(errno::EIO)),
        }
    }
    fn write_area(&mut self, w: &AreaWrite, area: &Vec<u8>) -> Result<(), IoError> {
        self.ops.push(Op::Write(*w));
        match (self.range(w.sector, w.sectors), w.bytes(area)) {
            (Some(r), Some(b)) if !self.fail_write && r.len() == b.len() => {
                self.img[r].copy_from_slice(b);
                Ok(())
            }
            _ => Err(IoError(errno::EIO)),
        }
    }
    fn zero_area(&mut self, io: AreaIo) -> Result<(), IoError> {
        self.ops.push(Op::Zero(io));
        match self.range(io.sector, io.sectors) {
            Some(r) if !self.fail_zero => {
                self.img[r].fill(0);
                Ok(())
            }
            _ => Err(IoError(errno::EIO)),
        }
    }
    fn write_header(&mut self, header: DiskHeader) -> Result<(), IoError> {
        self.ops.push(Op::Header(header));
        let mut chunk = vec![0u8; header.chunk_size as usize * 512];
        header.encode(&mut chunk).unwrap();
        match self.range(0, header.chunk_size) {
            Some(r) if !self.fail_header => {
                self.img[r].copy_from_slice(&chunk);
                Ok(())
            }
            _ => Err(IoError(errno::EIO)),
        }
    }
    fn report(&mut self, error: &Error) {
        self.reports.push(*error);
    }
}

/// A zeroed area buffer: one chunk.
pub fn area_buffer(l: Layout) -> Vec<u8> {
    vec![0u8; usize::try_from(l.chunk_bytes()).unwrap()]
}

/// The buffers the kernel store gives a committer of `l` writing `wb`
/// blocks, with `area` as the area buffer: [`BATCHES`] empty queues of
/// [`batch_capacity`] and an I/O buffer of [`io_buffer_len`] bytes.
pub fn buffers_with(
    l: Layout,
    wb: LogicalBlockSize,
    area: Vec<u8>,
) -> Buffers<Vec<u8>, Queue, Vec<u8>> {
    let cap = batch_capacity(l) as usize;
    let io = io_buffer_len(l, wb).unwrap();
    Buffers {
        area,
        batches: std::array::from_fn(|_| Queue::with_capacity(cap)),
        // Not zeroed: the committer must write only what it copied.
        io: vec![0xA5u8; io],
    }
}

/// [`buffers_with`] a zeroed area buffer.
pub fn buffers(l: Layout, wb: LogicalBlockSize) -> Buffers<Vec<u8>, Queue, Vec<u8>> {
    buffers_with(l, wb, area_buffer(l))
}

/// A store loaded from `img` by a scan, as the kernel loads it.
pub fn load(img: &[u8], l: Layout, wb: LogicalBlockSize) -> (Locked, TestCommitter) {
    let (r, _, area) = scan(img, l).unwrap();
    let (s, c) = Committer::from_scan(l, wb, &r, buffers_with(l, wb, area)).unwrap();
    (Locked(RefCell::new(s)), c)
}

/// A device of `chunks` chunks holding a new store: a valid header and a
/// zeroed area 0.
pub fn new_dev(l: Layout, chunks: u64) -> MemDev {
    MemDev::new(store_image(l, chunks, &[vec![]]))
}

/// `prepare_exception` under the lock.
pub fn prepare(s: &Locked, cow_sectors: u64) -> Result<u64, Error> {
    s.with(|s| s.prepare_exception(cow_sectors))
}

/// Applies commit write `w` to `dev` as the kernel issues it: zeros over
/// `w.zero_first()` if set, then, once that succeeded, `w.bytes()` at
/// `w.write().sector`. Each step is logged in `dev.ops` ([`Op::Zero`],
/// [`Op::Write`]) when it is tried. Returns the outcome to hand to
/// [`Committer::write_done`].
///
/// The zeroing fails if `dev.fail_zero` is set or the area lies past the
/// end of the image; it then writes nothing and the write is not tried.
/// The write fails if `ok` is false, `dev.fail_write` is set or it lies
/// past the end; it then writes nothing. So `ok = false` leaves the
/// zeroing done but not the write: the state a crash between the two
/// leaves.
pub fn issue(dev: &mut MemDev, w: &TestWrite, ok: bool) -> bool {
    if let Some(z) = w.zero_first() {
        dev.ops.push(Op::Zero(z));
        match dev.range(z.sector, z.sectors) {
            Some(r) if !dev.fail_zero => dev.img[r].fill(0),
            _ => return false,
        }
    }
    let aw = *w.write();
    dev.ops.push(Op::Write(aw));
    let bytes = w.bytes();
    assert_eq!(bytes.len(), aw.len as usize, "bytes() is write().len long");
    assert_eq!(u64::from(aw.len), u64::from(aw.sectors) * 512);
    match dev.range(aw.sector, aw.sectors) {
        Some(r) if ok && !dev.fail_write => {
            dev.img[r].copy_from_slice(bytes);
            true
        }
        _ => false,
    }
}

/// Calls the completions `f` hands out, in order, giving each emptied
/// queue back to `c` (as the kernel store does once it called them), until
/// nothing more is due: the completions called and the write to issue.
pub fn drain(
    c: &mut TestCommitter,
    s: &Locked,
    mut f: Flushed<Queue, Vec<u8>>,
) -> (Vec<u32>, Option<TestWrite>) {
    let mut all = vec![];
    let mut next = None;
    loop {
        assert!(f.error.is_none(), "unexpected error {:?}", f.error);
        if let Some(w) = f.next.take() {
            assert!(next.is_none(), "two writes in flight");
            next = Some(w);
        }
        let Some(mut b) = f.due.take() else {
            return (all, next);
        };
        all.append(&mut b.done);
        f = c.give_back(s, b);
    }
}

/// Hands the write in flight back with outcome `ok`: the completions now
/// due, in order (their queues given back), and the next write.
pub fn complete(
    c: &mut TestCommitter,
    s: &Locked,
    w: TestWrite,
    ok: bool,
) -> (Vec<u32>, Option<TestWrite>) {
    let f = c.write_done(s, w, ok);
    drain(c, s, f)
}

/// Calls the completions of batch `b` after [`Commit::Due`], as the kernel
/// store does, and gives the emptied queue back.
pub fn take_due(c: &mut TestCommitter, s: &Locked, b: Queue) -> (Vec<u32>, Option<TestWrite>) {
    let f = Flushed {
        due: Some(b),
        next: None,
        error: None,
    };
    drain(c, s, f)
}

/// Issues `w` on `dev` (ok unless `dev` fails it) and every write that
/// follows it until none is left: the completions that came back.
pub fn settle(c: &mut TestCommitter, s: &Locked, dev: &mut MemDev, w: TestWrite) -> Vec<u32> {
    let mut due = vec![];
    let mut next = Some(w);
    while let Some(w) = next {
        let ok = issue(dev, &w, true);
        let (mut d, n) = complete(c, s, w, ok);
        due.append(&mut d);
        next = n;
    }
    due
}

/// What a commit led to once every write it started was done.
#[derive(Debug, PartialEq, Eq)]
pub enum Synced {
    /// Recorded, waiting for a write in flight.
    Queued,
    /// Recorded; these completions came back (after the writes, if any).
    Done(Vec<u32>),
    /// Not recorded.
    Wait(u32),
}

/// Commits `e` and, as a synchronous store would, issues the writes it
/// makes on `dev` until none is left (or calls the completions handed out
/// by [`Commit::Due`] or [`Commit::Failed`]).
pub fn commit_sync(
    c: &mut TestCommitter,
    s: &Locked,
    dev: &mut MemDev,
    e: Exception,
    valid: bool,
    done: u32,
) -> Synced {
    match c.commit_exception(s, dev, e, valid, done) {
        Commit::Queued => Synced::Queued,
        Commit::Write(w) => Synced::Done(settle(c, s, dev, w)),
        Commit::Due(b) => {
            let (mut due, next) = take_due(c, s, b);
            if let Some(w) = next {
                due.append(&mut settle(c, s, dev, w));
            }
            Synced::Done(due)
        }
        Commit::Failed(done) => Synced::Done(vec![done]),
        Commit::Wait(done) => Synced::Wait(done),
    }
}

/// The write a commit returned; panics on anything else.
#[track_caller]
pub fn expect_write(r: TestCommit) -> TestWrite {
    match r {
        Commit::Write(w) => w,
        other => panic!("expected a write, got {other:?}"),
    }
}

/// Whether a commit returned [`Commit::Queued`].
pub fn is_queued(r: &TestCommit) -> bool {
    matches!(r, Commit::Queued)
}

/// Whether a commit returned [`Commit::Due`].
pub fn is_due(r: &TestCommit) -> bool {
    matches!(r, Commit::Due(_))
}

/// The writes among `ops`.
pub fn writes(ops: &[Op]) -> Vec<AreaWrite> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Write(w) => Some(*w),
            _ => None,
        })
        .collect()
}
