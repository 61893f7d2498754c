// SPDX-License-Identifier: GPL-2.0-only
//! Fuzz target: the input is a tiny COW device image run through the whole
//! activation path (header decision, validating scan, store construction),
//! then through a few commits, each write issued on the image and completed
//! at once, that are rescanned, and a full merge. Nothing may panic, and what the scanner accepts must obey
//! the layout rules.
//!
//! Input: byte 0 is a control byte, the rest is the image.
//! - bits 0-1: table chunk size 1 << n sectors (512 B .. 4 KiB);
//! - bit 2: the table supplies that size (else the default, 32 sectors);
//! - bit 3: write block is the whole chunk (else 512 bytes);
//! - bits 4-7: number of exceptions to commit after activation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use snap_format::*;
use std::cell::RefCell;

/// Largest chunk this target accepts from a header (keeps memory small).
const MAX_FUZZ_CHUNK_BYTES: u32 = 64 * 1024;

fn read_chunk(img: &[u8], l: Layout, chunk: u64, buf: &mut [u8]) -> Result<(), i32> {
    let size = l.chunk_bytes() as usize;
    let start = usize::try_from(chunk)
        .map_err(|_| errno::EIO)?
        .checked_mul(size)
        .ok_or(errno::EIO)?;
    let src = img.get(start..start + size).ok_or(errno::EIO)?;
    buf.copy_from_slice(src);
    Ok(())
}

fn write_at(img: &mut [u8], sector: u64, data: &[u8]) -> bool {
    let Some(start) = usize::try_from(sector)
        .ok()
        .and_then(|s| s.checked_mul(512))
    else {
        return false;
    };
    match img.get_mut(start..start + data.len()) {
        Some(dst) => {
            dst.copy_from_slice(data);
            true
        }
        None => false,
    }
}

/// The store's shared state behind a `RefCell`, its "spinlock".
struct Locked(RefCell<Shared>);

impl SharedLock for Locked {
    fn with<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

/// Completions: how many are queued, up to the capacity.
struct Count(usize, usize);

impl Batch for Count {
    type Completion = ();
    fn push(&mut self, (): ()) -> Result<(), ()> {
        if self.0 >= self.1 {
            return Err(());
        }
        self.0 += 1;
        Ok(())
    }
    fn len(&self) -> usize {
        self.0
    }
}

fn count(l: Layout) -> Count {
    Count(0, batch_capacity(l) as usize)
}

/// The store under test.
type Store = Committer<Vec<u8>, Count, Vec<u8>>;

/// The buffers of a store: `area`, three empty queues, an I/O buffer.
fn buffers(l: Layout, wb: LogicalBlockSize, area: Vec<u8>) -> Buffers<Vec<u8>, Count, Vec<u8>> {
    let io = io_buffer_len(l, wb).unwrap();
    Buffers {
        area,
        batches: [count(l), count(l), count(l)],
        io: vec![0u8; io],
    }
}

/// Gives back a queue whose completions were called.
fn give_back(store: &mut Store, shared: &Locked, b: Count) -> Flushed<Count, Vec<u8>> {
    assert!(b.0 > 0, "an empty queue came back due");
    store.give_back(shared, Count(0, b.1))
}

/// Takes what the store hands out until nothing is left, as the kernel
/// store does: due completions are called and their queue given back, and
/// each write is issued on the image and completed at once.
fn settle(store: &mut Store, shared: &Locked, io: &mut Image, mut f: Flushed<Count, Vec<u8>>) {
    loop {
        if let Some(e) = &f.error {
            panic!("a write could not be made: {e}");
        }
        let next = f.next.take();
        if let Some(b) = f.due.take() {
            let g = give_back(store, shared, b);
            assert!(
                next.is_none() || g.next.is_none(),
                "a second write in flight"
            );
            f = Flushed {
                due: g.due,
                next: next.or(g.next),
                error: g.error,
            };
            continue;
        }
        let Some(w) = next else {
            return;
        };
        let ok = issue(io, &w);
        f = store.write_done(shared, w, ok);
    }
}

/// The image as the store's metadata I/O: every write lands, or fails
/// past the end.
struct Image(Vec<u8>, Layout);

impl MetadataIo for Image {
    type Area = Vec<u8>;
    fn cow_sectors(&self) -> u64 {
        self.0.len() as u64 / 512
    }
    fn read_area(&mut self, io: AreaIo, area: &mut Vec<u8>) -> Result<(), IoError> {
        read_chunk(&self.0, self.1, io.chunk, area).map_err(IoError)
    }
    fn write_area(&mut self, w: &AreaWrite, area: &Vec<u8>) -> Result<(), IoError> {
        let bytes = w.bytes(area).ok_or(IoError(errno::EINVAL))?;
        write_at(&mut self.0, w.sector, bytes)
            .then_some(())
            .ok_or(IoError(errno::EIO))
    }
    fn zero_area(&mut self, io: AreaIo) -> Result<(), IoError> {
        let zeros = vec![0u8; self.1.chunk_bytes() as usize];
        write_at(&mut self.0, io.sector, &zeros)
            .then_some(())
            .ok_or(IoError(errno::EIO))
    }
    fn write_header(&mut self, header: DiskHeader) -> Result<(), IoError> {
        let mut h = vec![0u8; self.1.chunk_bytes() as usize];
        header.encode(&mut h).unwrap();
        write_at(&mut self.0, 0, &h)
            .then_some(())
            .ok_or(IoError(errno::EIO))
    }
    fn report(&mut self, error: &Error) {
        panic!("refused a prepared chunk: {error}");
    }
}

/// Issues commit write `w` on the image as the kernel store does: zeros
/// over `zero_first`, then the bytes; false if either fails.
fn issue(io: &mut Image, w: &CommitWrite<Vec<u8>>) -> bool {
    assert_eq!(w.bytes().len(), w.write().len as usize);
    if let Some(z) = w.zero_first() {
        if io.zero_area(z).is_err() {
            return false;
        }
    }
    write_at(&mut io.0, w.write().sector, w.bytes())
}

fn scan_image(img: &[u8], l: Layout) -> Result<(ScanResult, Vec<Exception>, Vec<u8>), Error> {
    let cow_sectors = img.len() as u64 / 512;
    let cow_chunks = l.device_chunks(cow_sectors);
    let mut area = vec![0u8; l.chunk_bytes() as usize];
    let mut seen = Vec::new();
    let r = scan_areas(
        l,
        cow_sectors,
        &mut area,
        |c, buf| read_chunk(img, l, c, buf),
        |e| {
            assert!(l.is_data_chunk(e.new_chunk), "{e:?}");
            assert!(e.new_chunk < cow_chunks, "{e:?}");
            assert!(e.old_chunk <= l.max_old_chunk(), "{e:?}");
            seen.push(e);
            Ok(())
        },
    )?;
    assert!(!l.is_metadata_chunk(r.next_free));
    assert!(r.current_committed < l.exceptions_per_area());
    assert_eq!(r.exceptions, seen.len() as u64);
    Ok((r, seen, area))
}

fn run(data: &[u8]) {
    let Some((&ctl, image)) = data.split_first() else {
        return;
    };
    let blocks = BlockSizes::SECTOR;
    let table_sectors = if ctl & 4 != 0 { 1u32 << (ctl & 3) } else { 0 };
    let table = TableChunkSize::new(table_sectors, blocks).unwrap();

    // Chunk 0 is read with the table's chunk size; a short device fails.
    let Some(header) = image.get(..table.chunk_size.bytes() as usize) else {
        return;
    };
    let decision = match read_header(header, table, blocks, |w| {
        let _ = w.to_string();
    }) {
        Ok(d) => d,
        Err(e) => {
            assert!(e.errno() > 0);
            let _ = e.to_string();
            return;
        }
    };
    let l = decision.layout();
    if l.chunk_bytes() > MAX_FUZZ_CHUNK_BYTES {
        return;
    }
    let wb = if ctl & 8 != 0 {
        LogicalBlockSize::new(l.chunk_bytes()).unwrap()
    } else {
        LogicalBlockSize::SECTOR
    };
    let mut img = image.to_vec();
    let cow_sectors = img.len() as u64 / 512;
    let area = vec![0u8; l.chunk_bytes() as usize];
    let bufs = |area| buffers(l, wb, area);

    let (shared, mut store, mut seen) = match decision {
        HeaderDecision::New(_) => {
            let (shared, c) = Committer::new_snapshot(l, wb, bufs(area)).unwrap();
            // As the kernel store: zero area 0 (may not fit), then the
            // header.
            let mut h = vec![0u8; l.chunk_bytes() as usize];
            shared.header().encode(&mut h).unwrap();
            if !write_at(&mut img, l.chunk_sectors().into(), &vec![0u8; h.len()]) {
                return;
            }
            write_at(&mut img, 0, &h);
            (shared, c, Vec::new())
        }
        HeaderDecision::Invalid(_) => {
            let (shared, mut c) = Committer::new_invalid(l, wb, bufs(area)).unwrap();
            let shared = Locked(RefCell::new(shared));
            let mut io = Image(img, l);
            let mut merger = c.merger().unwrap();
            assert_eq!(merger.prepare_merge(&shared, &mut io), Ok(None));
            return;
        }
        HeaderDecision::Valid(_) => match scan_image(&img, l) {
            Ok((r, seen, area)) => {
                // Activation writes nothing: the cleared garbage goes back
                // to disk with the first commit, below.
                let (shared, c) = Committer::from_scan(l, wb, &r, bufs(area)).unwrap();
                (shared, c, seen)
            }
            Err(e) => {
                assert!(e.errno() > 0);
                let _ = e.to_string();
                return;
            }
        },
    };
    let shared = Locked(RefCell::new(shared));
    let _ = shared.with(|s| s.usage(cow_sectors));

    // Commit a few exceptions, issuing each write on the image and
    // completing it at once.
    let n = u64::from(ctl >> 4);
    let mut prepared = Vec::new();
    for _ in 0..n {
        match shared.with(|s| s.prepare_exception(cow_sectors)) {
            Ok(c) => {
                assert!(l.is_data_chunk(c));
                assert!(seen.iter().all(|e| e.new_chunk != c), "chunk {c} reused");
                prepared.push(c);
            }
            Err(e) => {
                assert_eq!(e.errno(), errno::ENOSPC);
                break;
            }
        }
    }
    let mut io = Image(img, l);
    for (k, c) in prepared.iter().enumerate() {
        let e = Exception {
            old_chunk: k as u64,
            new_chunk: *c,
        };
        match store.commit_exception(&shared, &mut io, e, true, ()) {
            Commit::Write(w) => {
                let ok = issue(&mut io, &w);
                let f = store.write_done(&shared, w, ok);
                settle(&mut store, &shared, &mut io, f);
            }
            Commit::Due(b) => {
                assert!(!shared.with(|s| s.is_valid()));
                let f = Flushed {
                    due: Some(b),
                    next: None,
                    error: None,
                };
                settle(&mut store, &shared, &mut io, f);
            }
            // The queue has room for a whole group: the push never fails
            // (and its report would have panicked above).
            Commit::Failed(()) => panic!("the open queue refused a completion"),
            // Every write was completed and every queue given back.
            Commit::Queued | Commit::Wait(()) => {
                panic!("nothing is in flight or held between commits")
            }
        }
        assert!(store.is_idle());
        assert_eq!(store.open().len(), 0);
        seen.push(e);
    }
    if !shared.with(|s| s.is_valid()) {
        return;
    }
    let img = io.0;

    // What was written reads back: the old exceptions plus the new ones.
    let (r, reread, area) = scan_image(&img, l).unwrap();
    assert_eq!(reread, seen);
    if !prepared.is_empty() {
        // The first commit also cleared any leftovers after the end marker.
        assert_eq!(r.warning, None);
    }
    let (shared, mut store) = Committer::from_scan(l, wb, &r, bufs(area)).unwrap();
    let shared = Locked(RefCell::new(shared));
    let mut io = Image(img, l);

    // Merge everything back, newest first.
    let mut left = seen.len();
    for _ in 0..=(seen.len() + 2 * r.current_area as usize + 2) {
        let run = match store.merger().unwrap().prepare_merge(&shared, &mut io) {
            Ok(None) => break,
            Ok(Some(run)) => run,
            Err(e) => panic!("prepare_merge: {e}"),
        };
        let last = seen[left - 1];
        assert_eq!(
            (run.last_old_chunk, run.last_new_chunk),
            (last.old_chunk, last.new_chunk)
        );
        store
            .merger()
            .unwrap()
            .commit_merge(&shared, &mut io, run.count)
            .unwrap();
        left -= run.count as usize;
    }
    assert_eq!(left, 0);
    assert_eq!(
        store.merger().unwrap().prepare_merge(&shared, &mut io),
        Ok(None)
    );
    let (_, after, _) = scan_image(&io.0, l).unwrap();
    assert!(after.is_empty());
}

fuzz_target!(|data: &[u8]| run(data));
