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

/// A store under test: its shared state and committer.
pub type TestCommitter = Committer<Vec<u8>, Queue>;

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

    fn range(&self, sector: u64, sectors: u32) -> Option<std::ops::Range<usize>> {
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

/// A store loaded from `img` by a scan, as the kernel loads it.
pub fn load(img: &[u8], l: Layout, wb: LogicalBlockSize) -> (Locked, TestCommitter) {
    let (r, _, area) = scan(img, l).unwrap();
    let q = Queue::with_capacity(batch_capacity(l) as usize);
    let (s, c) = Committer::from_scan(l, wb, &r, area, q).unwrap();
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

/// Takes the queued completions after [`Commit::Due`], as the kernel store
/// does, leaving an empty queue of the same capacity.
pub fn take_batch(c: &mut TestCommitter) -> Vec<u32> {
    let cap = c.batch().cap;
    c.replace_batch(Queue::with_capacity(cap)).done
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
