// SPDX-License-Identifier: GPL-2.0-only

//! The commit and merge paths of a store: [`Committer`], which owns the
//! in-memory metadata area and writes it.

#[cfg(doc)]
use super::error::Warning;
use super::{
    chunk_size::LogicalBlockSize,
    error::Error,
    header::DiskHeader,
    layout::{
        AreaWrite,
        Layout, //
    },
    metadata_io::{
        IoError,
        MetadataIo, //
    },
    records::{
        clear_exception,
        exception_offset,
        read_exception,
        write_exception,
        Exception, //
    },
    scan::ScanResult,
    shared::{
        Shared,
        SharedLock, //
    }, //
};
use core::ops::{
    DerefMut,
    Range, //
};

/// The most completions a commit batch holds by default: see "Commit
/// batches" at [`Committer`].
pub const MAX_BATCH: u32 = 2048;

/// The capacity of the completion queue of a store of `layout`:
/// [`MAX_BATCH`], or an area's worth when smaller.
pub const fn batch_capacity(layout: Layout) -> u32 {
    let epa = layout.exceptions_per_area();
    if epa < MAX_BATCH {
        epa
    } else {
        MAX_BATCH
    }
}

/// The completions of committed exceptions waiting for the area write
/// that makes them durable. C: `ps->callbacks`, `ps->callback_count`.
pub trait Batch {
    /// What is called once the exception is durable (or failed).
    type Completion;

    /// Queues `done` after the others, or gives it back if the queue is
    /// full.
    fn push(&mut self, done: Self::Completion) -> Result<(), Self::Completion>;

    /// Completions queued.
    fn len(&self) -> usize;

    /// Whether none is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the caller does after [`Committer::commit_exception`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Commit<C> {
    /// The exception waits for those still pending.
    Queued,
    /// The queued completions are due: take them with
    /// [`Committer::replace_batch`], release the commit lock, and call each,
    /// oldest first, with [`Shared::is_valid`] as it is at that call (C
    /// reads `ps->valid` per callback; a callback may invalidate the
    /// store).
    Due,
    /// The completion could not be queued (the queue was full, which
    /// [`batch_capacity`] rules out) and the store is invalid: call `done`
    /// with failure, and the queued ones too if `due`.
    Unqueued {
        /// The completion of the exception.
        done: C,
        /// Whether the queued completions are due as well.
        due: bool,
    },
}

/// A run of exceptions, ending with the most recent one, whose `old_chunk`
/// and `new_chunk` both step by one.
///
/// C: `*last_old_chunk`, `*last_new_chunk` and the return value of
/// `persistent_prepare_merge()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MergeRun {
    /// `old_chunk` of the last exception of the run.
    pub last_old_chunk: u64,
    /// `new_chunk` of the last exception of the run.
    pub last_new_chunk: u64,
    /// Exceptions in the run, at least 1.
    pub count: u32,
}

impl MergeRun {
    /// `old_chunk` of the first exception of the run.
    ///
    /// C: `old_chunk + 1 - linear_chunks` in dm-snap.c's
    /// `snapshot_merge_next_chunks()`.
    pub fn first_old_chunk(&self) -> Option<u64> {
        self.last_old_chunk
            .checked_add(1)?
            .checked_sub(u64::from(self.count))
    }

    /// `new_chunk` of the first exception of the run.
    pub fn first_new_chunk(&self) -> Option<u64> {
        self.last_new_chunk
            .checked_add(1)?
            .checked_sub(u64::from(self.count))
    }
}

/// Byte range `[start, end)` of the area buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Dirty {
    start: u32,
    end: u32,
}

/// The commit and merge paths of a persistent store: the in-memory area
/// `A` (one chunk), what changed in it since it was last written, the
/// completions `B` waiting for that write and the merge position. Keep it
/// behind the store's commit mutex; the [`Shared`] state it updates sits
/// behind the spinlock `prepare_exception` takes, which it takes only for
/// O(1) steps, never across I/O.
///
/// C: the fields `area`, `current_committed`, `callbacks` and
/// `callback_count` of `struct pstore`; its methods are
/// `persistent_commit_exception()`, `persistent_prepare_merge()` and
/// `persistent_commit_merge()`, written in the same order.
///
/// # Invariants
///
/// - `area` is one chunk long and holds `current_committed` records of
///   area `current_area`, zeros after them.
/// - `current_committed < exceptions_per_area` between calls.
/// - Outside `dirty`, the area on disk equals `area` (see "Dirty ranges").
/// - `prepared <= current_committed`.
///
/// # Commit batches
///
/// C writes the area when no other exception is pending or the area is
/// full, so a batch can hold an area's worth of callbacks: 32,768 at
/// 512 KiB chunks, 524,288 at 8 MiB, all preallocated. This store also
/// writes when [`Committer::batch_limit`] completions are queued
/// ([`MAX_BATCH`] by default: dm-snapshot's default
/// `snapshot_copy_throttle`, so a larger batch rarely forms anyway).
/// Writing earlier is what C does at queue depth 1: the area written holds
/// every exception committed so far, so no state a crash can leave is new.
///
/// # Dirty ranges
///
/// C rewrites the whole area chunk on every commit; this store writes only
/// the logical blocks touched since the last successful write. The result
/// on disk and the crash guarantees are the same because the area on disk
/// equals `area` outside the dirty range. That holds at creation (a new
/// store's area 0 was zeroed on disk; a scanned area is a copy of the
/// disk except for the garbage cleared after the end marker, which is
/// marked dirty; an invalid store is all dirty), after a successful write
/// (it wrote the whole range), after a failed one (it touched only dirty
/// blocks, still dirty) and after moving to the next area (zeroed on disk
/// first; if that failed, the new area is all dirty). So a whole-chunk
/// write would store the same bytes, and a torn write of the dirty blocks
/// leaves a state a torn write of C's could leave. Writes keep
/// `REQ_PREFLUSH | REQ_FUA`. Pass the chunk size as the write block to get
/// C's whole-chunk writes.
pub struct Committer<A, B> {
    layout: Layout,
    write_block: LogicalBlockSize,
    area: A,
    current_area: u64,
    current_committed: u32,
    dirty: Option<Dirty>,
    /// The scan cleared records after the end marker that are still on
    /// disk: the first commit writes them (see
    /// [`Committer::commit_exception`]).
    cleanup: bool,
    batch: B,
    batch_limit: u32,
    /// The length of the run the last `prepare_merge` found, 0 once merged.
    prepared: u32,
    /// A merge write failed: merging stops until the store is reloaded.
    merge_failed: bool,
}

impl<A: DerefMut<Target = [u8]>, B: Batch> Committer<A, B> {
    /// The committer of an empty area 0, holding `area` as it is.
    fn with(
        layout: Layout,
        write_block: LogicalBlockSize,
        area: A,
        batch: B,
    ) -> Result<Self, Error> {
        layout.check_area_len(area.len())?;
        if write_block.bytes() > layout.chunk_bytes() {
            return Err(Error::InvalidBlockSize {
                bytes: write_block.bytes(),
                max: layout.chunk_bytes(),
            });
        }
        Ok(Self {
            layout,
            write_block,
            area,
            current_area: 0,
            current_committed: 0,
            dirty: None,
            cleanup: false,
            batch,
            batch_limit: batch_capacity(layout),
            prepared: 0,
            merge_failed: false,
        })
    }

    /// A new, empty, valid store, its area buffer `area` (one chunk)
    /// zeroed. The caller has zeroed area 0 on disk, then written the
    /// header.
    ///
    /// C: `persistent_ctr()` and the `new_snapshot` branch of
    /// `persistent_read_metadata()`.
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`] if `area` is not one chunk;
    /// [`Error::InvalidBlockSize`] if `write_block` exceeds the chunk.
    pub fn new_snapshot(
        layout: Layout,
        write_block: LogicalBlockSize,
        area: A,
        batch: B,
    ) -> Result<(Shared, Self), Error> {
        let mut c = Self::with(layout, write_block, area, batch)?;
        c.area.fill(0);
        Ok((Shared::new(layout, true), c))
    }

    /// Starts a new store on a COW device without one: zeros over area 0
    /// first, then the header with `REQ_PREFLUSH | REQ_FUA`. The header
    /// must not reach the disk before the zeros, or a crash between the
    /// two leaves a valid header over stale records.
    ///
    /// C: the `new_snapshot` branch of `persistent_read_metadata()`, which
    /// writes the header first, without flags.
    ///
    /// # Errors
    ///
    /// [`Error::NewStoreZeroFailed`], [`Error::NewStoreHeaderFailed`], or
    /// as [`Committer::new_snapshot`], checked before any write.
    pub fn create(
        io: &mut impl MetadataIo<Area = A>,
        layout: Layout,
        write_block: LogicalBlockSize,
        area: A,
        batch: B,
    ) -> Result<(Shared, Self), Error> {
        let made = Self::new_snapshot(layout, write_block, area, batch)?;
        // C: r = zero_disk_area(ps, 0);
        let area0 = layout.area_io(0).ok_or(Error::Overflow)?;
        io.zero_area(area0)
            .map_err(|IoError(errno)| Error::NewStoreZeroFailed { errno })?;
        // C: r = write_header(ps);
        io.write_header(DiskHeader::new(true, layout.chunk_size()))
            .map_err(|IoError(errno)| Error::NewStoreHeaderFailed { errno })?;
        Ok(made)
    }

    /// A store whose header says it is invalid. Its area is never written
    /// while it is invalid, and the disk content is unknown, so the whole
    /// area counts as dirty.
    ///
    /// C: `persistent_ctr()` and `persistent_read_metadata()` returning 1.
    ///
    /// # Errors
    ///
    /// As [`Committer::new_snapshot`].
    pub fn new_invalid(
        layout: Layout,
        write_block: LogicalBlockSize,
        area: A,
        batch: B,
    ) -> Result<(Shared, Self), Error> {
        let mut c = Self::with(layout, write_block, area, batch)?;
        c.area.fill(0);
        c.dirty = Some(c.whole_area());
        Ok((Shared::new(layout, false), c))
    }

    /// The store after a successful scan; `area` holds the bytes of the
    /// last, partial area. Records after the end marker are zeroed in
    /// memory and marked dirty (see [`Warning::GarbageAfterEndMarker`]);
    /// nothing is written until the first commit.
    ///
    /// C: the state `read_exceptions()` leaves.
    ///
    /// # Errors
    ///
    /// As [`Committer::new_snapshot`], or [`Error::IndexOutOfArea`] if
    /// `scan.current_committed` is not below `exceptions_per_area`.
    pub fn from_scan(
        layout: Layout,
        write_block: LogicalBlockSize,
        scan: &ScanResult,
        area: A,
        batch: B,
    ) -> Result<(Shared, Self), Error> {
        let epa = layout.exceptions_per_area();
        if scan.current_committed >= epa {
            return Err(Error::IndexOutOfArea {
                index: scan.current_committed,
                exceptions_per_area: epa,
            });
        }
        let mut c = Self::with(layout, write_block, area, batch)?;
        c.current_area = scan.current_area;
        c.current_committed = scan.current_committed;
        for index in scan.current_committed..epa {
            if read_exception(&c.area, index) != Some(Exception::default()) {
                clear_exception(&mut c.area, index).ok_or(Error::Overflow)?;
                c.mark_dirty(index)?;
                c.cleanup = true;
            }
        }
        let mut shared = Shared::new(layout, true);
        shared.current_area = scan.current_area;
        shared.next_free = scan.next_free;
        Ok((shared, c))
    }

    /// The same store writing once `limit` completions are queued (at
    /// least one, at most an area's worth) instead of
    /// [`batch_capacity`]'s.
    #[must_use]
    pub fn with_batch_limit(mut self, limit: u32) -> Self {
        self.batch_limit = limit.min(self.layout.exceptions_per_area()).max(1);
        self
    }

    /// Records exception `e`, finished (`valid`) or failed, and queues its
    /// completion `done`; writes the area when no other exception is
    /// pending, the area is full or the batch is (see "Commit batches").
    /// A failed exception, a failed write or a record that would not read
    /// back as an exception (chunk 0, a metadata chunk, an `old_chunk` too
    /// large; reported, not recorded) invalidate the store.
    ///
    /// The first commit after a scan that cleared records after the end
    /// marker first writes them back. A torn write of the new record over
    /// the end marker could otherwise leave a record behind it that reads
    /// as an exception on the next load, pointing at a chunk that may hold
    /// other data by then. Activation does not write it: the COW device
    /// may be read-only, and C never writes a valid store there.
    ///
    /// C: `persistent_commit_exception()`.
    pub fn commit_exception(
        &mut self,
        shared: &impl SharedLock,
        io: &mut impl MetadataIo<Area = A>,
        e: Exception,
        valid: bool,
        done: B::Completion,
    ) -> Commit<B::Completion> {
        if core::mem::take(&mut self.cleanup) && shared.with(|s| s.valid) {
            if let Err(error) = self.write_area(io) {
                io.report(&Error::CleanupFailed {
                    area: self.current_area,
                    errno: error.errno(),
                });
                shared.with(|s| s.valid = false);
            }
        }

        // C: write_exception(ps, ps->current_committed++, &ce);
        let refused = self
            .layout
            .check_exception(self.current_area, self.current_committed, e, None)
            .and_then(|()| self.record(e))
            .err();
        if let Some(error) = &refused {
            io.report(error);
        }
        // C: if (!valid) ps->valid = 0; and the atomic_dec_and_test() of
        // ps->pending_count below.
        let pending = shared.with(|s| {
            let pending = s.pending_count.checked_sub(1);
            s.pending_count = pending.unwrap_or(0);
            if !valid || refused.is_some() || pending.is_none() {
                s.valid = false;
            }
            pending
        });
        if pending.is_none() {
            io.report(&Error::CommitWithoutPrepare);
        }

        // C: cb = ps->callbacks + ps->callback_count++;
        let unqueued = self.batch.push(done).err();
        if unqueued.is_some() {
            io.report(&Error::CallbackQueueFull);
            shared.with(|s| s.valid = false);
        }

        // C: if (!atomic_dec_and_test(&ps->pending_count) &&
        //        (ps->current_committed != ps->exceptions_per_area))
        //         return;
        let full = self.current_committed == self.layout.exceptions_per_area();
        let batch_full = self.batch.len() >= usize::try_from(self.batch_limit).unwrap_or(0);
        let due = pending.unwrap_or(0) == 0 || full || batch_full;
        if due {
            self.flush(shared, io, full);
        }
        match unqueued {
            Some(done) => Commit::Unqueued { done, due },
            None if due => Commit::Due,
            None => Commit::Queued,
        }
    }

    /// Writes the area for the completions queued; when it is `full`, wipes
    /// the next area on disk first and moves to it after.
    fn flush(&mut self, shared: &impl SharedLock, io: &mut impl MetadataIo<Area = A>, full: bool) {
        let next = if full {
            self.current_area.checked_add(1)
        } else {
            None
        };
        // C: if ((ps->current_committed == ps->exceptions_per_area) &&
        //        zero_disk_area(ps, ps->current_area + 1))
        //         ps->valid = 0;
        let mut zero_failed = false;
        if full {
            let zeroed = next
                .and_then(|a| self.layout.area_io(a))
                .is_some_and(|next| io.zero_area(next).is_ok());
            if !zeroed {
                zero_failed = true;
                shared.with(|s| s.valid = false);
            }
        }

        // C: if (ps->valid && area_io(ps, REQ_OP_WRITE | REQ_PREFLUSH |
        //        REQ_FUA | REQ_SYNC))
        //         ps->valid = 0;
        if shared.with(|s| s.valid) && self.write_area(io).is_err() {
            shared.with(|s| s.valid = false);
        }

        // C: advance to the next area if this one is full.
        if let Some(next) = next {
            self.current_committed = 0;
            self.current_area = next;
            self.area.fill(0);
            self.dirty = zero_failed.then(|| self.whole_area());
            shared.with(|s| s.current_area = next);
        }
    }

    /// Takes the queued completions, leaving `empty` in their place. Call
    /// it after [`Commit::Due`].
    pub fn replace_batch(&mut self, empty: B) -> B {
        core::mem::replace(&mut self.batch, empty)
    }

    /// Says where the next run of exceptions to merge is, newest first:
    /// `None` when no exception is left. When the area in memory is empty
    /// it reads the previous one, which must be full and valid.
    ///
    /// C: `persistent_prepare_merge()`. Unlike C, a failed read or check
    /// leaves the store on its current area.
    ///
    /// # Errors
    ///
    /// [`Error::ReadFailed`], a validation error of the area read, or
    /// [`Error::MergeCommitFailed`] after a failed merge write.
    pub fn prepare_merge(
        &mut self,
        shared: &impl SharedLock,
        io: &mut impl MetadataIo<Area = A>,
    ) -> Result<Option<MergeRun>, Error> {
        if self.merge_failed {
            return Err(Error::MergeCommitFailed);
        }
        self.prepared = 0;
        // C: when the current area is empty, move back to the preceding
        // area.
        if self.current_committed == 0 {
            // C: have we finished?
            let Some(prev) = self.current_area.checked_sub(1) else {
                return Ok(None);
            };
            // C: ps->current_area--; area_io(ps, REQ_OP_READ);
            if let Err(error) = self.read_full_area(io, prev) {
                self.area.fill(0);
                return Err(error);
            }
            // C: ps->current_committed = ps->exceptions_per_area;
            self.current_area = prev;
            self.current_committed = self.layout.exceptions_per_area();
            self.dirty = None;
            // Garbage the scan left in the area merged away is zeroed on
            // disk before that area takes a record again.
            self.cleanup = false;
            shared.with(|s| s.current_area = prev);
        }
        let run = self.last_run()?;
        self.prepared = run.count;
        Ok(Some(run))
    }

    /// Reads area `prev` into the area buffer and checks that every record
    /// in it is an exception.
    fn read_full_area(
        &mut self,
        io: &mut impl MetadataIo<Area = A>,
        prev: u64,
    ) -> Result<(), Error> {
        let aio = self.layout.area_io(prev).ok_or(Error::Overflow)?;
        io.read_area(aio, &mut self.area)
            .map_err(|IoError(errno)| Error::ReadFailed {
                chunk: aio.chunk,
                errno,
            })?;
        self.layout
            .check_full_area(prev, &self.area, io.cow_sectors())
    }

    /// The run ending with the last exception of the area in memory.
    ///
    /// C: the loop of `persistent_prepare_merge()`.
    fn last_run(&self) -> Result<MergeRun, Error> {
        let cc = self.current_committed;
        let index = cc.checked_sub(1).ok_or(Error::Overflow)?;
        let last = read_exception(&self.area, index).ok_or(Error::Overflow)?;
        let mut count: u32 = 1;
        while count < cc {
            let Some(e) = read_exception(&self.area, index.wrapping_sub(count)) else {
                break;
            };
            let step = u64::from(count);
            if last.old_chunk.checked_sub(step) != Some(e.old_chunk)
                || last.new_chunk.checked_sub(step) != Some(e.new_chunk)
            {
                break;
            }
            count = count.wrapping_add(1);
        }
        Ok(MergeRun {
            last_old_chunk: last.old_chunk,
            last_new_chunk: last.new_chunk,
            count,
        })
    }

    /// Removes the last `nr_merged` exceptions, which dm-snapshot has
    /// copied back to the origin, from the area, and writes it. A failed
    /// write stops merging until the store is reloaded: C would carry on
    /// from cleared records.
    ///
    /// C: `persistent_commit_merge()`.
    ///
    /// # Errors
    ///
    /// [`Error::MergeCountInvalid`] unless `1 <= nr_merged <=` the run the
    /// last [`Committer::prepare_merge`] found (nothing changes then);
    /// [`Error::WriteFailed`]; [`Error::MergeCommitFailed`].
    pub fn commit_merge(
        &mut self,
        shared: &impl SharedLock,
        io: &mut impl MetadataIo<Area = A>,
        nr_merged: u32,
    ) -> Result<(), Error> {
        if self.merge_failed {
            return Err(Error::MergeCommitFailed);
        }
        // C: BUG_ON(nr_merged > ps->current_committed);
        let prepared = self.prepared;
        let first = self.current_committed.checked_sub(nr_merged);
        let (Some(first), true) = (first, nr_merged != 0 && nr_merged <= prepared) else {
            return Err(Error::MergeCountInvalid {
                nr_merged,
                prepared,
            });
        };

        // C: for (i = 0; i < nr_merged; i++)
        //         clear_exception(ps, ps->current_committed - 1 - i);
        let records = exception_offset(first)
            .zip(exception_offset(self.current_committed))
            .and_then(|(start, end)| self.area.get_mut(start..end))
            .ok_or(Error::Overflow)?;
        records.fill(0);
        self.mark_dirty(first)?;
        self.mark_dirty(self.current_committed.wrapping_sub(1))?;
        self.prepared = 0;

        // C: r = area_io(ps, REQ_OP_WRITE | REQ_PREFLUSH | REQ_FUA);
        //    if (r < 0) return r;
        if let Err(error) = self.write_area(io) {
            self.merge_failed = true;
            return Err(error);
        }
        // The write covered the cleared garbage too, if any was left.
        self.cleanup = false;

        // C: ps->current_committed -= nr_merged;
        //    ps->next_free = area_location(ps, ps->current_area) +
        //                    ps->current_committed + 1;
        self.current_committed = first;
        let next_free = self
            .layout
            .area_location(self.current_area)
            .and_then(|l| l.checked_add(u64::from(first)))
            .and_then(|l| l.checked_add(1))
            .ok_or(Error::Overflow)?;
        shared.with(|s| s.next_free = next_free);
        Ok(())
    }

    /// Writes record `e` at `current_committed` and counts it.
    fn record(&mut self, e: Exception) -> Result<(), Error> {
        let index = self.current_committed;
        write_exception(&mut self.area, index, e).ok_or(Error::IndexOutOfArea {
            index,
            exceptions_per_area: self.layout.exceptions_per_area(),
        })?;
        self.mark_dirty(index)?;
        self.current_committed = index.wrapping_add(1);
        Ok(())
    }

    /// Writes the dirty range of the area (all of it if none is recorded);
    /// it is clean after a successful write.
    fn write_area(&mut self, io: &mut impl MetadataIo<Area = A>) -> Result<(), Error> {
        let w = self.area_write()?;
        io.write_area(&w, &self.area)
            .map_err(|IoError(errno)| Error::WriteFailed {
                chunk: w.chunk,
                errno,
            })?;
        self.dirty = None;
        Ok(())
    }

    fn whole_area(&self) -> Dirty {
        Dirty {
            start: 0,
            end: self.layout.chunk_bytes(),
        }
    }

    fn mark_dirty(&mut self, index: u32) -> Result<(), Error> {
        let start = index.checked_mul(16).ok_or(Error::Overflow)?;
        let end = start.checked_add(16).ok_or(Error::Overflow)?;
        self.dirty = Some(match self.dirty {
            None => Dirty { start, end },
            Some(d) => Dirty {
                start: d.start.min(start),
                end: d.end.max(end),
            },
        });
        Ok(())
    }

    /// The write of the dirty range rounded out to the write block.
    fn area_write(&self) -> Result<AreaWrite, Error> {
        let d = self.dirty.unwrap_or(self.whole_area());
        let block = self.write_block.bytes();
        let mask = block.wrapping_sub(1);
        let start = d.start & !mask;
        let end = d.end.checked_add(mask).ok_or(Error::Overflow)? & !mask;
        let end = end.min(self.layout.chunk_bytes());
        let len = end.checked_sub(start).ok_or(Error::Overflow)?;
        let chunk = self
            .layout
            .area_location(self.current_area)
            .ok_or(Error::Overflow)?;
        let sector = self
            .layout
            .chunk_to_sector(chunk)
            .and_then(|s| s.checked_add(u64::from(start.wrapping_shr(9))))
            .ok_or(Error::Overflow)?;
        Ok(AreaWrite {
            area: self.current_area,
            chunk,
            offset: start,
            len,
            sector,
            sectors: len.wrapping_shr(9),
        })
    }

    /// The layout.
    pub const fn layout(&self) -> Layout {
        self.layout
    }

    /// The area in memory. C: `ps->area`.
    pub fn area(&self) -> &[u8] {
        &self.area
    }

    /// Area held in memory. C: `ps->current_area`.
    pub const fn current_area(&self) -> u64 {
        self.current_area
    }

    /// Exceptions recorded in the area in memory.
    /// C: `ps->current_committed`.
    pub const fn current_committed(&self) -> u32 {
        self.current_committed
    }

    /// The queued completions. C: `ps->callbacks`.
    pub const fn batch(&self) -> &B {
        &self.batch
    }

    /// How many completions a write waits for at most: see "Commit
    /// batches".
    pub const fn batch_limit(&self) -> u32 {
        self.batch_limit
    }

    /// The bytes of the area buffer changed since the last successful
    /// write, rounded out to the write block, or `None`. No C counterpart.
    pub fn dirty_range(&self) -> Option<Range<usize>> {
        self.dirty?;
        self.area_write().ok()?.range()
    }

    /// Whether the garbage the scan cleared after the end marker is still
    /// to be written. No C counterpart.
    pub const fn cleanup_pending(&self) -> bool {
        self.cleanup
    }
}
