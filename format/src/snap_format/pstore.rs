// SPDX-License-Identifier: GPL-2.0-only

//! Store state: the prepare / commit state machine [`Pstore`] and its merge
//! bookkeeping.

use super::{
    chunk_size::LogicalBlockSize,
    convert::exception_offset,
    error::Error,
    header::DiskHeader,
    layout::{
        AreaIo,
        AreaWrite,
        Layout,
        Usage,
        INITIAL_NEXT_FREE, //
    },
    records::{
        clear_exception,
        read_exception,
        write_exception,
        Exception, //
    },
    scan::ScanResult, //
};
#[cfg(doc)]
use super::{
    error::{
        messages,
        Warning, //
    },
    scan::Scan, //
};
use core::cmp::max;
use core::ops::Range;

/// What the caller must do next while committing exceptions.
///
/// No C counterpart: C performs these steps inline in
/// `persistent_commit_exception()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommitStep {
    /// The exception is recorded in memory; other exceptions are still in
    /// flight and the area is not full, so its callback waits.
    Queued,
    /// The area just filled: write zeros over the whole next area (plain
    /// `REQ_OP_WRITE`), then call [`Pstore::commit_io_done`] with the
    /// outcome. C: `zero_disk_area(ps, ps->current_area + 1)`.
    ZeroNextArea(AreaIo),
    /// Write these bytes of the area buffer with
    /// `REQ_OP_WRITE | REQ_PREFLUSH | REQ_FUA | REQ_SYNC`, then call
    /// [`Pstore::commit_io_done`] with the outcome. C: `area_io()`.
    WriteArea(AreaWrite),
    /// The flush is over: call the `callbacks` queued callbacks, oldest
    /// first, each with the success value [`Pstore::is_valid`] has at the
    /// time of that call (C reads `ps->valid` per callback, and a callback
    /// may invalidate the store). Hold no store lock while calling them.
    /// `valid` is the value when the flush ended.
    ///
    /// When `clear_area` is set the full area was written and the store
    /// moved to the next one: zero the area buffer before the next call
    /// that takes it. The store leaves that O(chunk) work to the caller so
    /// that it can be done outside the lock that guards the `Pstore`.
    Complete {
        /// Callbacks to call.
        callbacks: u32,
        /// [`Pstore::is_valid`] when the flush ended.
        valid: bool,
        /// The area buffer must be zeroed: the store moved to the next area.
        clear_area: bool,
    },
    /// The exception could not be recorded: it would not read back as a
    /// valid exception (`error` says why; log it). The store is now invalid
    /// and the exception's callback is queued like any other. Call
    /// `callbacks` queued callbacks now, as for [`CommitStep::Complete`]:
    /// 0 while other exceptions are still pending (the last of them ends
    /// the flush), else all of them.
    ///
    /// C records whatever it is given.
    Refused {
        /// Why the exception was refused.
        error: Error,
        /// Callbacks to call now.
        callbacks: u32,
    },
}

/// What `prepare_merge` asks for.
///
/// C: the outcomes of `persistent_prepare_merge()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrepareMerge {
    /// Nothing left to merge (C returns 0).
    Done,
    /// Read this previous area into the area buffer, check it with
    /// [`Layout::check_full_area`], then call [`Pstore::merge_area_read`].
    /// C: `area_io(ps, REQ_OP_READ)`.
    ReadArea(AreaIo),
    /// Find the run in the area buffer with [`RunQuery::find`], then
    /// report it with [`Pstore::merge_run_found`].
    FindRun(RunQuery),
}

/// Where the next run to merge ends: the in-memory area and the number of
/// exceptions it holds. Finding the run reads up to a whole area, so the
/// caller does it outside the lock that guards the [`Pstore`].
///
/// C: the loop of `persistent_prepare_merge()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RunQuery {
    layout: Layout,
    area: u64,
    committed: u32,
}

impl RunQuery {
    /// The run of exceptions ending with the last one of `area` (the
    /// in-memory area buffer), newest first.
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`]; [`Error::MergeState`] on an empty area; a
    /// validation error if the last exception is not a valid exception.
    pub fn find(&self, area: &[u8]) -> Result<MergeRun, Error> {
        self.layout.check_area_len(area.len())?;
        let cc = self.committed;
        let last_index = cc.checked_sub(1).ok_or(Error::MergeState)?;
        let last = read_exception(area, last_index).ok_or(Error::IndexOutOfArea {
            index: last_index,
            exceptions_per_area: self.layout.exceptions_per_area(),
        })?;
        if last.is_end_marker() {
            return Err(Error::UnexpectedEndMarker {
                area: self.area,
                index: last_index,
            });
        }
        self.layout
            .check_exception(self.area, last_index, last, None)?;
        let mut count: u32 = 1;
        while count < cc {
            let index = last_index.wrapping_sub(count);
            let Some(e) = read_exception(area, index) else {
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
}

/// A previous area read for merging whose records were all checked by
/// [`Layout::check_full_area`]; only that function makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CheckedArea {
    pub(super) area: u64,
}

/// What [`Pstore::commit_merge`] asks for: zero the bytes `clear` of the
/// area buffer (the merged records), then write `write` of it with
/// `REQ_OP_WRITE | REQ_PREFLUSH | REQ_FUA`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MergeCommit {
    /// Byte range of the area buffer to zero first.
    pub clear: Range<usize>,
    /// The write to do then.
    pub write: AreaWrite,
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
    ///
    /// C: `new_chunk + 1 - linear_chunks` in dm-snap.c's
    /// `snapshot_merge_next_chunks()`.
    pub fn first_new_chunk(&self) -> Option<u64> {
        self.last_new_chunk
            .checked_add(1)?
            .checked_sub(u64::from(self.count))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum FlushPhase {
    Idle,
    ZeroingNext,
    Writing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum MergePhase {
    Idle,
    Reading,
    Finding,
    Prepared { count: u32 },
    Committing { nr_merged: u32 },
    Failed,
}

/// Byte range `[start, end)` of the area buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Dirty {
    start: u32,
    end: u32,
}

/// The most callbacks a commit batch holds by default: see "Commit
/// batches" at [`Pstore`].
pub const MAX_BATCH: u32 = 2048;

/// The capacity of the caller's callback array for a store of `layout`:
/// [`MAX_BATCH`], or an area's worth when smaller.
pub const fn batch_capacity(layout: Layout) -> u32 {
    let epa = layout.exceptions_per_area();
    if epa < MAX_BATCH {
        epa
    } else {
        MAX_BATCH
    }
}

/// The state of a persistent store, without its buffers or I/O.
///
/// C: `struct pstore` (the fields `valid`, `version`, `current_area`,
/// `next_free`, `current_committed`, `pending_count`, `callback_count`).
///
/// The in-memory metadata area (one chunk, C: `ps->area`) belongs to the
/// caller and is passed to the methods that touch it. The caller keeps its
/// own array of queued callbacks (C: `ps->callbacks`, sized
/// `exceptions_per_area`), sized [`batch_capacity`]:
/// [`Pstore::callback_count`] never exceeds [`Pstore::batch_limit`].
///
/// # Commit batches
///
/// C writes the area when no other exception is pending or the area is
/// full, so a batch can hold a whole area's worth of callbacks: 32,768 at
/// 512 KiB chunks, 524,288 at 8 MiB, all preallocated. This store also
/// writes when [`Pstore::batch_limit`] callbacks are queued
/// ([`MAX_BATCH`], 2048 by default: dm-snapshot's default
/// `snapshot_copy_throttle`, so a batch larger than that rarely forms with
/// the default settings anyway). Writing earlier is what C does at queue
/// depth 1: the area written holds every exception committed so far, so
/// no state a crash can leave is new.
///
/// # Dirty ranges and crash safety
///
/// C rewrites the whole area chunk on every commit. This store writes only
/// the logical blocks touched since the last successful write. The on-disk
/// result and the crash guarantees are the same because:
///
/// - Invariant: outside the dirty range, the area on disk equals the area
///   in memory. It holds at creation (a new store's area 0 is zeroed on
///   disk by the caller, a scanned area is a copy of the disk except for
///   cleared garbage, which is marked dirty; an invalid store is all dirty),
///   after a successful write (which wrote the whole dirty range), after a
///   failed write (which touched only dirty blocks, still dirty), and after
///   moving to the next area (zeroed on disk by a whole-chunk write first;
///   if that failed, the new area is all dirty).
/// - Hence a whole-chunk write would store the same bytes: the blocks we
///   skip already hold them.
/// - A crash during C's write can leave any mix of old and new sectors of
///   the chunk; during ours, any mix of old and new sectors of the dirty
///   blocks, with the others already equal to new. Every state ours can
///   leave, C's could too.
/// - The write keeps `REQ_PREFLUSH | REQ_FUA`: data chunks copied before it
///   are durable first, and completion means the metadata is durable.
/// - The dirty range is cleared only after a successful write.
///
/// Pass the area's chunk size as the write block to get C's whole-chunk
/// writes.
///
/// # Locking
///
/// The C store relies on dm-snapshot's locks: `prepare_exception` runs
/// under a spinlock, commits are serialized, `usage` runs under the
/// snapshot lock, and callbacks may re-enter `prepare_exception` and
/// `drop_snapshot`. Keep a `Pstore` behind one spinlock, release it around
/// I/O and callbacks, and serialize the commit path (it owns the area
/// buffer). Every method is O(1) except the constructors, which clear or
/// scan an area: the O(chunk) work of the commit and merge paths
/// (zeroing the buffer for the next area, checking an area read back,
/// finding a run, clearing merged records) is left to the caller
/// ([`CommitStep::Complete`], [`Layout::check_full_area`], [`RunQuery`],
/// [`MergeCommit`]), to be done outside the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pstore {
    layout: Layout,
    write_block: LogicalBlockSize,
    valid: bool,
    next_free: u64,
    current_area: u64,
    current_committed: u32,
    pending_count: u32,
    callback_count: u32,
    batch_limit: u32,
    dirty: Option<Dirty>,
    /// The scan cleared records after the end marker that are still on
    /// disk: see [`Pstore::cleanup_write`].
    cleanup: bool,
    flush: FlushPhase,
    merge: MergePhase,
}

impl Pstore {
    fn with(
        layout: Layout,
        write_block: LogicalBlockSize,
        area: &[u8],
        valid: bool,
    ) -> Result<Self, Error> {
        layout.check_area_len(area.len())?;
        if write_block.bytes() > layout.chunk_bytes() {
            return Err(Error::InvalidBlockSize {
                bytes: write_block.bytes(),
            });
        }
        Ok(Self {
            layout,
            write_block,
            valid,
            next_free: INITIAL_NEXT_FREE,
            current_area: 0,
            current_committed: 0,
            pending_count: 0,
            callback_count: 0,
            batch_limit: batch_capacity(layout),
            dirty: None,
            cleanup: false,
            flush: FlushPhase::Idle,
            merge: MergePhase::Idle,
        })
    }

    /// The same store flushing once `limit` callbacks are queued (at least
    /// one, at most an area's worth) instead of [`batch_capacity`]'s.
    #[must_use]
    pub fn with_batch_limit(mut self, limit: u32) -> Self {
        self.batch_limit = limit.min(self.layout.exceptions_per_area()).max(1);
        self
    }

    /// How many callbacks a flush waits for at most: see "Commit batches".
    pub const fn batch_limit(&self) -> u32 {
        self.batch_limit
    }

    /// A new, empty, valid store. Zeroes `area` (one chunk). The caller has
    /// written the header and zeroed area 0 on disk (C does both right
    /// before).
    ///
    /// C: `persistent_ctr()` + the `new_snapshot` branch of
    /// `persistent_read_metadata()`.
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`] if `area` is not one chunk;
    /// [`Error::InvalidBlockSize`] if `write_block` exceeds the chunk.
    pub fn new_snapshot(
        layout: Layout,
        write_block: LogicalBlockSize,
        area: &mut [u8],
    ) -> Result<Self, Error> {
        let s = Self::with(layout, write_block, area, true)?;
        area.fill(0);
        Ok(s)
    }

    /// A store whose header says it is invalid. Zeroes `area`; no area is
    /// ever written while invalid, and the disk content is unknown, so the
    /// whole area counts as dirty.
    ///
    /// C: `persistent_ctr()` + `persistent_read_metadata()` returning 1.
    ///
    /// # Errors
    ///
    /// As [`Pstore::new_snapshot`].
    pub fn new_invalid(
        layout: Layout,
        write_block: LogicalBlockSize,
        area: &mut [u8],
    ) -> Result<Self, Error> {
        let mut s = Self::with(layout, write_block, area, false)?;
        area.fill(0);
        s.dirty = Some(s.whole_area());
        Ok(s)
    }

    /// The store after a successful scan. `area` must hold the bytes of the
    /// last, partial area (C: the `memcpy` into `ps->area`). Records at and
    /// after the end marker are zeroed in memory and marked dirty (see
    /// [`Warning::GarbageAfterEndMarker`]); nothing is written until the
    /// first commit ([`Pstore::cleanup_write`]).
    ///
    /// C: the state left by `read_exceptions()`.
    ///
    /// # Errors
    ///
    /// As [`Pstore::new_snapshot`], or [`Error::IndexOutOfArea`] if
    /// `scan.current_committed` is not below `exceptions_per_area`.
    pub fn from_scan(
        layout: Layout,
        write_block: LogicalBlockSize,
        scan: &ScanResult,
        area: &mut [u8],
    ) -> Result<Self, Error> {
        let mut s = Self::with(layout, write_block, area, true)?;
        let epa = layout.exceptions_per_area();
        if scan.current_committed >= epa {
            return Err(Error::IndexOutOfArea {
                index: scan.current_committed,
                exceptions_per_area: epa,
            });
        }
        s.current_area = scan.current_area;
        s.current_committed = scan.current_committed;
        s.next_free = scan.next_free;
        for index in scan.current_committed..epa {
            if read_exception(area, index) != Some(Exception::default()) {
                clear_exception(area, index).ok_or(Error::Overflow)?;
                s.mark_dirty(index)?;
                s.cleanup = true;
            }
        }
        Ok(s)
    }

    /// The write that makes durable the garbage [`Pstore::from_scan`]
    /// cleared after the end marker, or `None` if there is none to write
    /// (none was cleared, it was written, the area was left by a merge, or
    /// the store is invalid and never writes its area). Do it with
    /// `REQ_PREFLUSH | REQ_FUA` before the first
    /// [`Pstore::commit_exception`], which refuses to run until it is
    /// reported with [`Pstore::cleanup_done`].
    ///
    /// Why before the first commit: a commit writes its record over the
    /// end marker, and if that write is torn (the block with the new
    /// record durable, a later block not), a record left behind it becomes
    /// an exception on the next load, pointing at a chunk that may by then
    /// hold other data. Why not at activation: activation must not write a
    /// COW device that may be read-only, and C never does for a valid
    /// store; a store that is never written keeps its garbage harmlessly.
    ///
    /// No C counterpart (C leaves the garbage on disk).
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`] if the write does not fit the arithmetic.
    pub fn cleanup_write(&self) -> Result<Option<AreaWrite>, Error> {
        if !self.cleanup || !self.valid || self.flush != FlushPhase::Idle {
            return Ok(None);
        }
        self.area_write().map(Some)
    }

    /// Reports the outcome of the [`Pstore::cleanup_write`]. On success
    /// the area on disk equals the area in memory; a failure invalidates
    /// the store, as a failed commit write does (C: `ps->valid = 0` after
    /// `area_io()` fails), so that its area is never written again.
    pub fn cleanup_done(&mut self, ok: bool) {
        if !self.cleanup {
            return;
        }
        if ok {
            self.cleanup = false;
            if self.flush == FlushPhase::Idle && self.merge == MergePhase::Idle {
                self.dirty = None;
            }
        } else {
            self.valid = false;
        }
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

    /// The layout. C: `ps->exceptions_per_area` and `store->chunk_size`.
    pub const fn layout(&self) -> Layout {
        self.layout
    }

    /// Whether the store is valid. C: `ps->valid`.
    pub const fn is_valid(&self) -> bool {
        self.valid
    }

    /// Next chunk to allocate. C: `ps->next_free`.
    pub const fn next_free(&self) -> u64 {
        self.next_free
    }

    /// Area held in memory. C: `ps->current_area`.
    pub const fn current_area(&self) -> u64 {
        self.current_area
    }

    /// Exceptions recorded in the in-memory area. C: `ps->current_committed`.
    pub const fn current_committed(&self) -> u32 {
        self.current_committed
    }

    /// Prepared exceptions not yet committed. C: `ps->pending_count`.
    pub const fn pending_count(&self) -> u32 {
        self.pending_count
    }

    /// Committed exceptions whose callbacks wait for the next flush.
    /// C: `ps->callback_count`.
    pub const fn callback_count(&self) -> u32 {
        self.callback_count
    }

    /// The byte range of the area buffer changed since the last successful
    /// write, rounded out to the write block, or `None`.
    ///
    /// No C counterpart.
    pub fn dirty_range(&self) -> Option<Range<usize>> {
        self.dirty?;
        self.area_write().ok()?.range()
    }

    /// The header to write for this store's current validity.
    ///
    /// C: the header built by `write_header()`.
    pub const fn header(&self) -> DiskHeader {
        DiskHeader::new(self.valid, self.layout.chunk_size())
    }

    /// Usage figures for a COW device of `cow_sectors` sectors.
    ///
    /// C: `persistent_usage()`.
    pub fn usage(&self, cow_sectors: u64) -> Option<Usage> {
        self.layout
            .usage(self.next_free, self.current_area, cow_sectors)
    }

    /// Allocates the data chunk of a new exception on a COW device of
    /// `cow_sectors` sectors, moving `next_free` past metadata chunks.
    /// O(1), no allocation: safe under a spinlock.
    ///
    /// C: `persistent_prepare_exception()`. Unlike C, a `next_free` that is
    /// not a data chunk (C never produces one) is moved to the next data
    /// chunk before use.
    ///
    /// # Errors
    ///
    /// [`Error::NoSpace`] if the chunk does not fit on the device
    /// (`cow_sectors < (next_free + 1) * chunk_size`);
    /// [`Error::TooManyPending`] on counter overflow.
    pub fn prepare_exception(&mut self, cow_sectors: u64) -> Result<u64, Error> {
        let mut chunk = max(self.next_free, INITIAL_NEXT_FREE);
        if self.layout.is_metadata_chunk(chunk) {
            chunk = chunk.checked_add(1).ok_or(Error::Overflow)?;
        }
        let fits = chunk
            .checked_add(1)
            .and_then(|c| c.checked_mul(u64::from(self.layout.chunk_sectors())))
            .is_some_and(|end| end <= cow_sectors);
        if !fits {
            return Err(Error::NoSpace { chunk, cow_sectors });
        }
        let pending = self
            .pending_count
            .checked_add(1)
            .ok_or(Error::TooManyPending)?;
        let next = chunk
            .checked_add(1)
            .and_then(|c| self.layout.skip_metadata(c))
            .ok_or(Error::Overflow)?;
        self.pending_count = pending;
        self.next_free = next;
        Ok(chunk)
    }

    /// Records a finished exception in the area buffer and queues its
    /// callback. `valid == false` (a failed copy) invalidates the store.
    /// Returns the first step of a flush when no other exception is pending,
    /// the area is now full or the batch is (see "Commit batches"), else
    /// [`CommitStep::Queued`]. An exception
    /// that could not be read back by [`Scan`] (chunk 0, a metadata chunk,
    /// an `old_chunk` too large) is not recorded: it is consumed as a
    /// failed one and [`CommitStep::Refused`] says why.
    ///
    /// C: `persistent_commit_exception()` up to its I/O.
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`], [`Error::FlushInProgress`],
    /// [`Error::CleanupPending`], [`Error::CommitWithoutPrepare`] or
    /// [`Error::IndexOutOfArea`]: the
    /// caller broke the protocol, and nothing changes.
    pub fn commit_exception(
        &mut self,
        area: &mut [u8],
        e: Exception,
        valid: bool,
    ) -> Result<CommitStep, Error> {
        self.layout.check_area_len(area.len())?;
        if self.flush != FlushPhase::Idle {
            return Err(Error::FlushInProgress);
        }
        if self.cleanup && self.valid {
            return Err(Error::CleanupPending);
        }
        let pending = self
            .pending_count
            .checked_sub(1)
            .ok_or(Error::CommitWithoutPrepare)?;
        let index = self.current_committed;
        let epa = self.layout.exceptions_per_area();
        if index >= epa {
            return Err(Error::IndexOutOfArea {
                index,
                exceptions_per_area: epa,
            });
        }
        let callbacks = self.callback_count.checked_add(1).ok_or(Error::Overflow)?;
        if let Err(error) = self
            .layout
            .check_exception(self.current_area, index, e, None)
        {
            // Consume it as a failed exception, so that the flush the last
            // pending exception triggers still comes.
            self.valid = false;
            self.callback_count = callbacks;
            self.pending_count = pending;
            // A full batch is completed now too: the store is invalid, so
            // its callbacks report failure, flushed or not.
            let callbacks = if pending == 0 || callbacks >= self.batch_limit {
                self.callback_count = 0;
                callbacks
            } else {
                0
            };
            return Ok(CommitStep::Refused { error, callbacks });
        }
        write_exception(area, index, e).ok_or(Error::Overflow)?;
        self.mark_dirty(index)?;
        if !valid {
            self.valid = false;
        }
        self.current_committed = index.wrapping_add(1);
        self.callback_count = callbacks;
        self.pending_count = pending;

        let full = self.current_committed == epa;
        if pending != 0 && !full && callbacks < self.batch_limit {
            return Ok(CommitStep::Queued);
        }
        if full {
            let next_area = self.current_area.checked_add(1).ok_or(Error::Overflow)?;
            let io = self.layout.area_io(next_area).ok_or(Error::Overflow)?;
            self.flush = FlushPhase::ZeroingNext;
            return Ok(CommitStep::ZeroNextArea(io));
        }
        self.flush_write_or_finish(false)
    }

    /// Consumes a prepared exception that the caller could not record
    /// because its queue of callbacks was full (which [`batch_capacity`]
    /// rules out): the store becomes invalid, as for a refused exception,
    /// and the exception's callback is the caller's to complete, with
    /// failure; it is not counted. Returns [`CommitStep::Refused`] with the
    /// queued callbacks due now: all of them when no other exception is
    /// pending or the batch is full, else 0 (the last pending exception
    /// ends the flush).
    ///
    /// No C counterpart (C's callback array holds an area's worth).
    ///
    /// # Errors
    ///
    /// [`Error::FlushInProgress`] or [`Error::CommitWithoutPrepare`];
    /// nothing changes then.
    pub fn abandon_commit(&mut self) -> Result<CommitStep, Error> {
        if self.flush != FlushPhase::Idle {
            return Err(Error::FlushInProgress);
        }
        let pending = self
            .pending_count
            .checked_sub(1)
            .ok_or(Error::CommitWithoutPrepare)?;
        self.pending_count = pending;
        self.valid = false;
        let callbacks = if pending == 0 || self.callback_count >= self.batch_limit {
            core::mem::take(&mut self.callback_count)
        } else {
            0
        };
        Ok(CommitStep::Refused {
            error: Error::CallbackQueueFull,
            callbacks,
        })
    }

    fn flush_write_or_finish(&mut self, zero_failed: bool) -> Result<CommitStep, Error> {
        if self.valid {
            let w = self.area_write()?;
            self.flush = FlushPhase::Writing;
            Ok(CommitStep::WriteArea(w))
        } else {
            self.finish_flush(zero_failed)
        }
    }

    /// Ends a flush. O(1): moving to the next area leaves the zeroing of
    /// the area buffer to the caller ([`CommitStep::Complete`]).
    fn finish_flush(&mut self, zero_failed: bool) -> Result<CommitStep, Error> {
        let clear_area = self.current_committed == self.layout.exceptions_per_area();
        if clear_area {
            let next_area = self.current_area.checked_add(1).ok_or(Error::Overflow)?;
            self.current_committed = 0;
            self.current_area = next_area;
            self.dirty = if zero_failed {
                Some(self.whole_area())
            } else {
                None
            };
        }
        let callbacks = self.callback_count;
        self.callback_count = 0;
        self.flush = FlushPhase::Idle;
        Ok(CommitStep::Complete {
            callbacks,
            valid: self.valid,
            clear_area,
        })
    }

    /// Reports the outcome of the I/O asked for by the last
    /// [`CommitStep::ZeroNextArea`] or [`CommitStep::WriteArea`] and returns
    /// the next step. A failure invalidates the store; after a failed
    /// zeroing the area is not written. O(1), so it can run under a
    /// spinlock.
    ///
    /// C: the rest of `persistent_commit_exception()`.
    ///
    /// # Errors
    ///
    /// [`Error::NoFlushInProgress`]; nothing changes then.
    pub fn commit_io_done(&mut self, ok: bool) -> Result<CommitStep, Error> {
        match self.flush {
            FlushPhase::Idle => Err(Error::NoFlushInProgress),
            FlushPhase::ZeroingNext => {
                if !ok {
                    self.valid = false;
                }
                self.flush_write_or_finish(!ok)
            }
            FlushPhase::Writing => {
                if ok {
                    self.dirty = None;
                } else {
                    self.valid = false;
                }
                self.finish_flush(false)
            }
        }
    }

    /// Marks the store invalid and returns the header to write to chunk 0
    /// (encode it into a chunk-sized buffer with [`DiskHeader::encode`]).
    /// If that write fails, log [`messages::DROP_WRITE_HEADER_FAILED`].
    ///
    /// C: `persistent_drop_snapshot()`.
    pub fn drop_snapshot(&mut self) -> DiskHeader {
        self.valid = false;
        self.header()
    }

    /// Says where the next run of exceptions to merge is, newest first.
    /// When the in-memory area is empty it asks for the previous area to be
    /// read (the state changes only once [`Pstore::merge_area_read`]
    /// accepts it). O(1).
    ///
    /// C: `persistent_prepare_merge()`.
    ///
    /// # Errors
    ///
    /// [`Error::MergeCommitFailed`] after a failed merge write;
    /// [`Error::MergeState`] while a merge write is outstanding.
    pub fn prepare_merge(&mut self) -> Result<PrepareMerge, Error> {
        match self.merge {
            MergePhase::Failed => return Err(Error::MergeCommitFailed),
            MergePhase::Committing { .. } => return Err(Error::MergeState),
            MergePhase::Idle
            | MergePhase::Reading
            | MergePhase::Finding
            | MergePhase::Prepared { .. } => {}
        }
        if self.current_committed == 0 {
            if self.current_area == 0 {
                self.merge = MergePhase::Idle;
                return Ok(PrepareMerge::Done);
            }
            let prev = self.current_area.wrapping_sub(1);
            let io = self.layout.area_io(prev).ok_or(Error::Overflow)?;
            self.merge = MergePhase::Reading;
            return Ok(PrepareMerge::ReadArea(io));
        }
        self.merge = MergePhase::Finding;
        Ok(PrepareMerge::FindRun(self.run_query()))
    }

    fn run_query(&self) -> RunQuery {
        RunQuery {
            layout: self.layout,
            area: self.current_area,
            committed: self.current_committed,
        }
    }

    /// Moves to the previous area, read for [`PrepareMerge::ReadArea`] and
    /// accepted by [`Layout::check_full_area`], and says where its last run
    /// is. O(1).
    ///
    /// C: the `!ps->current_committed` branch of
    /// `persistent_prepare_merge()`. Unlike C, a failed read or check
    /// (report it by not calling this) leaves the store on its current
    /// area.
    ///
    /// # Errors
    ///
    /// [`Error::MergeState`] if no read was asked for or `checked` is not
    /// the previous area.
    pub fn merge_area_read(&mut self, checked: CheckedArea) -> Result<RunQuery, Error> {
        if self.merge != MergePhase::Reading || self.current_committed != 0 {
            return Err(Error::MergeState);
        }
        let prev = self.current_area.checked_sub(1).ok_or(Error::MergeState)?;
        if checked.area != prev {
            return Err(Error::MergeState);
        }
        self.current_area = prev;
        self.current_committed = self.layout.exceptions_per_area();
        self.dirty = None;
        // Garbage left in the area merged away is zeroed on disk before
        // that area takes a record again ([`CommitStep::ZeroNextArea`]).
        self.cleanup = false;
        self.merge = MergePhase::Finding;
        Ok(self.run_query())
    }

    /// Records the run [`RunQuery::find`] found; dm-snapshot merges it next.
    /// O(1).
    ///
    /// # Errors
    ///
    /// [`Error::MergeState`] unless a run was being looked for;
    /// [`Error::MergeCountInvalid`] unless `1 <= run.count <=`
    /// the exceptions in memory.
    pub fn merge_run_found(&mut self, run: &MergeRun) -> Result<(), Error> {
        if self.merge != MergePhase::Finding {
            return Err(Error::MergeState);
        }
        if run.count == 0 || run.count > self.current_committed {
            return Err(Error::MergeCountInvalid {
                nr_merged: run.count,
                prepared: self.current_committed,
            });
        }
        self.merge = MergePhase::Prepared { count: run.count };
        Ok(())
    }

    /// Marks the last `nr_merged` exceptions of the in-memory area as gone
    /// and returns what to clear and write; report the write's outcome with
    /// [`Pstore::commit_merge_done`]. O(1): the caller clears the records.
    ///
    /// C: `persistent_commit_merge()` up to its I/O.
    ///
    /// # Errors
    ///
    /// [`Error::MergeCountInvalid`] unless `1 <= nr_merged <=` the count of
    /// the last prepared run (which is at most `current_committed`);
    /// [`Error::MergeState`] without a prepared run;
    /// [`Error::MergeCommitFailed`]. Nothing changes on error.
    pub fn commit_merge(&mut self, nr_merged: u32) -> Result<MergeCommit, Error> {
        let prepared = match self.merge {
            MergePhase::Prepared { count } => count,
            MergePhase::Failed => return Err(Error::MergeCommitFailed),
            _ => return Err(Error::MergeState),
        };
        if nr_merged == 0 || nr_merged > prepared || nr_merged > self.current_committed {
            return Err(Error::MergeCountInvalid {
                nr_merged,
                prepared,
            });
        }
        let first = self.current_committed.wrapping_sub(nr_merged);
        let start = exception_offset(first).ok_or(Error::Overflow)?;
        let end = exception_offset(self.current_committed).ok_or(Error::Overflow)?;
        let saved = self.dirty;
        self.mark_dirty(first)?;
        if let Err(e) = self.mark_dirty(self.current_committed.wrapping_sub(1)) {
            self.dirty = saved;
            return Err(e);
        }
        let write = match self.area_write() {
            Ok(w) => w,
            Err(e) => {
                self.dirty = saved;
                return Err(e);
            }
        };
        self.merge = MergePhase::Committing { nr_merged };
        Ok(MergeCommit {
            clear: start..end,
            write,
        })
    }

    /// Reports the outcome of the [`Pstore::commit_merge`] write. On
    /// success the exceptions are gone and `next_free` becomes
    /// `area_location(current_area) + current_committed + 1`, as in C. On
    /// failure the store refuses further merging
    /// ([`Error::MergeCommitFailed`]) until it is reloaded: C would carry on
    /// from cleared records.
    ///
    /// C: the rest of `persistent_commit_merge()`.
    ///
    /// # Errors
    ///
    /// [`Error::MergeState`] if no merge write was outstanding.
    pub fn commit_merge_done(&mut self, ok: bool) -> Result<(), Error> {
        let MergePhase::Committing { nr_merged } = self.merge else {
            return Err(Error::MergeState);
        };
        if !ok {
            self.merge = MergePhase::Failed;
            return Ok(());
        }
        let cc = self
            .current_committed
            .checked_sub(nr_merged)
            .ok_or(Error::Overflow)?;
        let next_free = self
            .layout
            .area_location(self.current_area)
            .and_then(|l| l.checked_add(u64::from(cc)))
            .and_then(|l| l.checked_add(1))
            .ok_or(Error::Overflow)?;
        self.current_committed = cc;
        self.next_free = next_free;
        // The write covered the whole dirty range, cleared garbage included.
        self.dirty = None;
        self.cleanup = false;
        self.merge = MergePhase::Idle;
        Ok(())
    }
}
