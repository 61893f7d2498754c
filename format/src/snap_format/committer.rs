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
        AreaIo,
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

/// The completion queues a store needs: the open batch, the one in
/// flight, and the one whose completions the caller is calling.
pub const BATCHES: usize = 3;

/// The size of the I/O buffer of a store of `layout` writing `write_block`
/// blocks: the most bytes one commit write carries, a batch's records
/// rounded out to whole blocks, or the whole chunk when smaller.
pub fn io_buffer_len(layout: Layout, write_block: LogicalBlockSize) -> Option<usize> {
    let records = batch_capacity(layout).checked_mul(16)?;
    let block = write_block.bytes();
    let len = records.checked_add(block.checked_mul(2)?)?;
    usize::try_from(len.min(layout.chunk_bytes())).ok()
}

/// A metadata write for the caller to issue without waiting. Zero
/// [`CommitWrite::zero_first`] if set (a plain write; C:
/// `zero_disk_area()`), then, once that completed, write
/// [`CommitWrite::bytes`] to the sectors of [`CommitWrite::write`] with
/// `REQ_PREFLUSH | REQ_FUA | REQ_SYNC`; report the outcome with
/// [`Committer::write_done`], handing the write back.
///
/// The bytes are a copy of the area's dirty blocks taken when the write
/// was made: new records go on into the area while it is in flight. Only
/// the committer makes one, at most one at a time, so the write handed
/// back to [`Committer::write_done`] is the one in flight.
#[must_use]
#[derive(Debug)]
pub struct CommitWrite<W> {
    zero_first: Option<AreaIo>,
    write: AreaWrite,
    buf: W,
}

impl<W: DerefMut<Target = [u8]>> CommitWrite<W> {
    /// The area to zero before the write: the next one, when this write
    /// completes a full area.
    pub const fn zero_first(&self) -> Option<AreaIo> {
        self.zero_first
    }

    /// Where the bytes go.
    pub const fn write(&self) -> &AreaWrite {
        &self.write
    }

    /// The bytes to write, `write().len` of them.
    pub fn bytes(&self) -> &[u8] {
        let len = usize::try_from(self.write.len).unwrap_or(usize::MAX);
        self.buf.get(..len).unwrap_or(&[])
    }

    /// The buffer holding the bytes, for I/O that needs its owner (dm-io
    /// maps vmalloc and kmalloc memory differently); the bytes are its
    /// first `write().len`.
    pub const fn buffer(&self) -> &W {
        &self.buf
    }

    /// Takes the buffer out, for I/O that must own it while in flight;
    /// [`CommitWrite::from_parts`] puts the write back together.
    pub fn into_parts(self) -> (CommitWriteParts, W) {
        let parts = CommitWriteParts {
            zero_first: self.zero_first,
            write: self.write,
        };
        (parts, self.buf)
    }

    /// The write `parts` came from, with its buffer `buf` back.
    pub const fn from_parts(parts: CommitWriteParts, buf: W) -> Self {
        Self {
            zero_first: parts.zero_first,
            write: parts.write,
            buf,
        }
    }
}

/// A [`CommitWrite`] without its buffer, while I/O owns the buffer.
#[must_use]
#[derive(Clone, Copy, Debug)]
pub struct CommitWriteParts {
    zero_first: Option<AreaIo>,
    write: AreaWrite,
}

impl CommitWriteParts {
    /// As [`CommitWrite::zero_first`].
    pub const fn zero_first(&self) -> Option<AreaIo> {
        self.zero_first
    }

    /// As [`CommitWrite::write`].
    pub const fn write(&self) -> &AreaWrite {
        &self.write
    }
}

/// What the caller does after [`Committer::commit_exception`].
#[must_use]
#[derive(Debug)]
pub enum Commit<B, C, W> {
    /// Recorded; the completion waits for a write in flight.
    Queued,
    /// Recorded; issue this write, which makes it durable.
    Write(CommitWrite<W>),
    /// Recorded, and the store is invalid with no write in flight and no
    /// batch out: call these completions with failure, in order, then give
    /// the batch back with [`Committer::give_back`].
    Due(B),
    /// Recorded, but its completion could not be queued (not reached: the
    /// queue is checked first); the store is now invalid. Call `done` with
    /// failure.
    Failed(C),
    /// Not recorded, nothing changed: the area is full and its last write
    /// waits for the one in flight, or the open batch is full. Call again
    /// with `done` after the next [`Committer::write_done`] or
    /// [`Committer::give_back`].
    Wait(C),
}

/// What [`Committer::write_done`] and [`Committer::give_back`] hand back.
#[must_use]
#[derive(Debug)]
pub struct Flushed<B, W> {
    /// Completions now due, in order: call each with [`Shared::is_valid`]
    /// as it is at that call, then give the emptied batch back with
    /// [`Committer::give_back`]. One batch is out at a time (see
    /// "Handing out completions").
    pub due: Option<B>,
    /// The next write to issue.
    pub next: Option<CommitWrite<W>>,
    /// A problem to log: a write that could not be made, which made the
    /// store invalid.
    pub error: Option<Error>,
}

/// What [`Committer::launch`] did.
enum Launch<B, W> {
    Nothing,
    Write(CommitWrite<W>),
    Due(B),
}

/// The merge paths of a [`Committer`] with no commit write in flight;
/// from [`Committer::merger`].
pub struct Merger<'a, A, B, W>(&'a mut Committer<A, B, W>);

impl<A, B, W> Merger<'_, A, B, W>
where
    A: DerefMut<Target = [u8]>,
    B: Batch,
    W: DerefMut<Target = [u8]>,
{
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
        self.0.prepare_merge(shared, io)
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
    /// last [`Merger::prepare_merge`] found (nothing changes then);
    /// [`Error::WriteFailed`]; [`Error::MergeCommitFailed`].
    pub fn commit_merge(
        &mut self,
        shared: &impl SharedLock,
        io: &mut impl MetadataIo<Area = A>,
        nr_merged: u32,
    ) -> Result<(), Error> {
        self.0.commit_merge(shared, io, nr_merged)
    }
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

/// The buffers a committer owns: the area (one chunk), [`BATCHES`] empty
/// completion queues of [`batch_capacity`] each, and an I/O buffer of
/// [`io_buffer_len`] bytes.
pub struct Buffers<A, B, W> {
    /// The area. C: `ps->area`.
    pub area: A,
    /// Empty completion queues. C: `ps->callbacks`, an area's worth.
    pub batches: [B; BATCHES],
    /// The copy of the dirty blocks a commit write carries.
    pub io: W,
}

/// Up to two values kept for reuse.
struct Spares<T>(Option<T>, Option<T>);

impl<T> Spares<T> {
    fn take(&mut self) -> Option<T> {
        self.0.take().or_else(|| self.1.take())
    }

    fn put(&mut self, v: T) {
        if self.0.is_none() {
            self.0 = Some(v);
        } else {
            self.1 = Some(v);
        }
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
/// completions `B` waiting for a write, the one write `W` in flight and
/// the merge position. Keep it behind the store's commit mutex; the
/// [`Shared`] state it updates sits behind the spinlock
/// `prepare_exception` takes, which it takes only for O(1) steps, never
/// across I/O.
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
/// - `current_committed <= exceptions_per_area`; equal only while the store
///   is valid and the full area's last write waits for the one in flight
///   (`full`), or after a merge stepped back into a full area.
/// - Outside `dirty` and the write in flight, the area on disk equals
///   `area` (see "Dirty ranges").
/// - At most one write is in flight: `flight` is `Some` exactly then (or
///   while it `landed`), and the I/O buffer is out with it until
///   `write_done`.
/// - `landed` only while `out`; `out` exactly while the caller holds a
///   batch handed out by `commit_exception`, `write_done` or `give_back`.
/// - `prepared <= current_committed`.
///
/// # Group commit
///
/// C writes the area synchronously once no other exception is pending,
/// so at any queue depth the committing thread (kcopyd) waits for every
/// PREFLUSH|FUA write and dispatches no copy meanwhile. This committer
/// returns the write to the caller, who issues it without waiting. The
/// records committed while it is in flight wait in the open batch and go
/// out together in the next write, made as soon as the flight ends
/// ([`Committer::write_done`]). A completion is due only once the write
/// holding its record completed, and writes complete in the order they
/// were made, so completions run in commit order. Every write holds every
/// record committed before it, as C's does, so no state a crash can leave
/// is new.
///
/// A batch holds at most [`Committer::batch_limit`] completions
/// ([`MAX_BATCH`] by default: dm-snapshot's default
/// `snapshot_copy_throttle`, so a larger batch rarely forms anyway); a
/// commit beyond that waits for the flight to end ([`Commit::Wait`]).
///
/// The record that fills the area is written with the next area zeroed
/// first, as C does, and the area in memory moves on when that write is
/// made. If a write is in flight, the full area waits for it, and the
/// next commit with it.
///
/// # Handing out completions
///
/// The caller calls a due batch with its locks released, so the write
/// made next may complete meanwhile, on another thread or inside the
/// submission. One batch is out at a time: a write reported by
/// [`Committer::write_done`] while a batch is out keeps its completions
/// until that batch comes back, and [`Committer::give_back`] hands them
/// out then. The write counts as in flight until then, so nothing else is
/// made or handed out meanwhile (there is no spare batch for it anyway).
/// Batches are thus called one after the other, in the order of their
/// writes, whoever reports the writes.
///
/// # Dirty ranges
///
/// C rewrites the whole area chunk on every commit; this store writes only
/// the logical blocks touched since the last write was made. The result
/// on disk and the crash guarantees are the same because the area on disk
/// equals `area` outside the dirty range and the write in flight. That
/// holds at creation (a new store's area 0 was zeroed on disk; a scanned
/// area is a copy of the disk except for the garbage cleared after the
/// end marker, which is marked dirty; an invalid store is all dirty),
/// while a write is in flight (it carries the range it cleared), after it
/// completed (it wrote the whole range; a failed write makes the store
/// invalid, and an invalid store writes no area again) and after moving to
/// the next area (zeroed on disk by the write that moved it). So a
/// whole-chunk write would store the same bytes, and a torn write of the
/// dirty blocks leaves a state a torn write of C's could leave. Writes
/// keep `REQ_PREFLUSH | REQ_FUA`. Pass the chunk size as the write block
/// to get C's whole-chunk writes.
pub struct Committer<A, B, W> {
    layout: Layout,
    write_block: LogicalBlockSize,
    area: A,
    current_area: u64,
    current_committed: u32,
    dirty: Option<Dirty>,
    /// The area is full and its last write not made yet (it waits for the
    /// write in flight). Not set by a merge stepping back into a full area.
    full: bool,
    /// The scan cleared records after the end marker that are still on
    /// disk: the first commit writes them (see
    /// [`Committer::commit_exception`]).
    cleanup: bool,
    /// Completions of the records not yet in a write.
    open: B,
    /// Completions of the write in flight; `Some` exactly while one is
    /// (or while one that completed waits for `out`: `landed`).
    flight: Option<B>,
    /// A due batch is out: handed to the caller, not given back yet.
    out: bool,
    /// The write in flight completed while a batch was out: its
    /// completions are due when that batch is given back.
    landed: bool,
    /// Empty completion queues.
    spare_batches: Spares<B>,
    /// The I/O buffer, `None` while a write has it.
    io_buf: Option<W>,
    batch_limit: u32,
    /// The length of the run the last `prepare_merge` found, 0 once merged.
    prepared: u32,
    /// A merge write failed: merging stops until the store is reloaded.
    merge_failed: bool,
}

impl<A, B, W> Committer<A, B, W>
where
    A: DerefMut<Target = [u8]>,
    B: Batch,
    W: DerefMut<Target = [u8]>,
{
    /// The committer of an empty area 0, holding the area as it is.
    fn with(
        layout: Layout,
        write_block: LogicalBlockSize,
        buffers: Buffers<A, B, W>,
    ) -> Result<Self, Error> {
        let Buffers {
            area,
            batches: [open, b1, b2],
            io,
        } = buffers;
        layout.check_area_len(area.len())?;
        if write_block.bytes() > layout.chunk_bytes() {
            return Err(Error::InvalidBlockSize {
                bytes: write_block.bytes(),
                max: layout.chunk_bytes(),
            });
        }
        let io_len = io_buffer_len(layout, write_block).ok_or(Error::Overflow)?;
        if io.len() < io_len {
            return Err(Error::BufferSize {
                expected: u64::try_from(io_len).unwrap_or(u64::MAX),
                actual: u64::try_from(io.len()).unwrap_or(u64::MAX),
            });
        }
        Ok(Self {
            layout,
            write_block,
            area,
            current_area: 0,
            current_committed: 0,
            dirty: None,
            full: false,
            cleanup: false,
            open,
            flight: None,
            out: false,
            landed: false,
            spare_batches: Spares(Some(b1), Some(b2)),
            io_buf: Some(io),
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
        buffers: Buffers<A, B, W>,
    ) -> Result<(Shared, Self), Error> {
        let mut c = Self::with(layout, write_block, buffers)?;
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
        buffers: Buffers<A, B, W>,
    ) -> Result<(Shared, Self), Error> {
        let made = Self::new_snapshot(layout, write_block, buffers)?;
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
        buffers: Buffers<A, B, W>,
    ) -> Result<(Shared, Self), Error> {
        let mut c = Self::with(layout, write_block, buffers)?;
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
        buffers: Buffers<A, B, W>,
    ) -> Result<(Shared, Self), Error> {
        let epa = layout.exceptions_per_area();
        if scan.current_committed >= epa {
            return Err(Error::IndexOutOfArea {
                index: scan.current_committed,
                exceptions_per_area: epa,
            });
        }
        let mut c = Self::with(layout, write_block, buffers)?;
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
    /// least one, at most [`batch_capacity`]) instead of
    /// [`batch_capacity`]'s.
    #[must_use]
    pub fn with_batch_limit(mut self, limit: u32) -> Self {
        self.batch_limit = limit.min(batch_capacity(self.layout)).max(1);
        self
    }

    /// Records exception `e`, finished (`valid`) or failed, and queues its
    /// completion `done`. When no write is in flight, returns the write
    /// that makes it durable ([`Commit::Write`]); otherwise it joins the
    /// next write, which [`Committer::write_done`] makes as soon as the
    /// flight ends: a group commit (see "Group commit"). A failed
    /// exception, a failed write or a record that would not read back as
    /// an exception (chunk 0, a metadata chunk, an `old_chunk` too large;
    /// reported, not recorded) invalidate the store.
    ///
    /// The first commit after a scan that cleared records after the end
    /// marker first writes them back, synchronously through `io`. A torn
    /// write of the new record over the end marker could otherwise leave a
    /// record behind it that reads as an exception on the next load,
    /// pointing at a chunk that may hold other data by then. Activation
    /// does not write it: the COW device may be read-only, and C never
    /// writes a valid store there.
    ///
    /// C: `persistent_commit_exception()`, which writes synchronously once
    /// no other exception is pending.
    pub fn commit_exception(
        &mut self,
        shared: &impl SharedLock,
        io: &mut impl MetadataIo<Area = A>,
        e: Exception,
        valid: bool,
        done: B::Completion,
    ) -> Commit<B, B::Completion, W> {
        let epa = self.layout.exceptions_per_area();
        let limit = usize::try_from(self.batch_limit).unwrap_or(usize::MAX);
        if self.full || self.open.len() >= limit {
            return Commit::Wait(done);
        }

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
        self.full = self.current_committed == epa;
        // C: if (!valid) ps->valid = 0; and the atomic_dec_and_test() of
        // ps->pending_count.
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
        if let Err(done) = self.open.push(done) {
            io.report(&Error::CallbackQueueFull);
            shared.with(|s| s.valid = false);
            if self.full {
                self.next_area(shared);
            }
            return Commit::Failed(done);
        }

        // C: the area is written once no other exception is pending; here
        // once no write is in flight.
        match self.launch_or_fail(shared) {
            (Launch::Nothing, error) => {
                if let Some(error) = &error {
                    io.report(error);
                }
                Commit::Queued
            }
            (Launch::Write(w), _) => Commit::Write(w),
            (Launch::Due(b), error) => {
                if let Some(error) = &error {
                    io.report(error);
                }
                Commit::Due(b)
            }
        }
    }

    /// What to do now that nothing may be in flight: a valid store writes
    /// the records not yet written (after zeroing the next area, when this
    /// one is full, then moving on to it); an invalid one moves past a full
    /// area and hands the open completions out to fail.
    ///
    /// C: the tail of `persistent_commit_exception()`.
    fn launch(&mut self, shared: &impl SharedLock) -> Result<Launch<B, W>, Error> {
        if self.flight.is_some() {
            return Ok(Launch::Nothing);
        }
        let full = self.full;
        if !shared.with(|s| s.valid) {
            // C writes no area for an invalid store; its callbacks fail.
            if full {
                self.next_area(shared);
            }
            // One batch out at a time: these wait for its give_back.
            if self.open.is_empty() || self.out {
                return Ok(Launch::Nothing);
            }
            return Ok(match self.spare_batches.take() {
                Some(empty) => {
                    self.out = true;
                    Launch::Due(core::mem::replace(&mut self.open, empty))
                }
                // The caller holds the spare: it hands these out when it
                // gives that back.
                None => Launch::Nothing,
            });
        }
        if self.open.is_empty() && !full {
            return Ok(Launch::Nothing);
        }
        // Both are back when the caller gave back what it was handed.
        let Some(empty) = self.spare_batches.take() else {
            return Ok(Launch::Nothing);
        };
        let Some(mut buf) = self.io_buf.take() else {
            self.spare_batches.put(empty);
            return Ok(Launch::Nothing);
        };
        // C: if ((ps->current_committed == ps->exceptions_per_area) &&
        //         zero_disk_area(ps, ps->current_area + 1))
        let zero_first = if full {
            let next = self.current_area.checked_add(1);
            match next.and_then(|a| self.layout.area_io(a)) {
                Some(z) => Some(z),
                None => {
                    self.spare_batches.put(empty);
                    self.io_buf = Some(buf);
                    return Err(Error::Overflow);
                }
            }
        } else {
            None
        };
        // C: area_io(ps, REQ_OP_WRITE | REQ_PREFLUSH | REQ_FUA | REQ_SYNC)
        let copied = self.area_write().ok().and_then(|write| {
            let range = write.range()?;
            buf.get_mut(..range.len())?
                .copy_from_slice(self.area.get(range)?);
            Some(write)
        });
        let Some(write) = copied else {
            self.spare_batches.put(empty);
            self.io_buf = Some(buf);
            return Err(Error::Overflow);
        };
        self.dirty = None;
        self.flight = Some(core::mem::replace(&mut self.open, empty));
        // C: if (ps->current_committed == ps->exceptions_per_area) {
        //         ps->current_committed = 0;
        //         ps->current_area++;
        //         zero_memory_area(ps);
        //    }
        if full {
            self.next_area(shared);
        }
        Ok(Launch::Write(CommitWrite {
            zero_first,
            write,
            buf,
        }))
    }

    /// [`Committer::launch`]; a write that cannot be made (arithmetic that
    /// cannot fail did) makes the store invalid, and the open completions
    /// fail with it. Returns the problem to log.
    fn launch_or_fail(&mut self, shared: &impl SharedLock) -> (Launch<B, W>, Option<Error>) {
        match self.launch(shared) {
            Ok(l) => (l, None),
            Err(error) => {
                shared.with(|s| s.valid = false);
                (self.launch(shared).unwrap_or(Launch::Nothing), Some(error))
            }
        }
    }

    /// Moves the area in memory to the next area, zeroed on disk by the
    /// write that completes this one (or not at all for an invalid store,
    /// which writes no area again).
    fn next_area(&mut self, shared: &impl SharedLock) {
        let Some(next) = self.current_area.checked_add(1) else {
            return;
        };
        self.current_committed = 0;
        self.current_area = next;
        self.area.fill(0);
        self.dirty = None;
        self.full = false;
        shared.with(|s| s.current_area = next);
    }

    /// Reports the outcome of the write in flight, handed back as `w`
    /// (from [`Commit::Write`] or [`Flushed::next`]): its completions are
    /// due, and the next write is made when records came meanwhile. A
    /// failed write (or zeroing) invalidates the store, and every
    /// completion waiting fails with it: those of the open batch once the
    /// due batch is given back.
    ///
    /// While a batch is out, the completions stay until it is given back
    /// (see "Handing out completions"), and nothing is handed back now.
    ///
    /// C: the tail of `persistent_commit_exception()`: `ps->valid = 0` on a
    /// failed `zero_disk_area()` or `area_io()`, then the callbacks.
    pub fn write_done(
        &mut self,
        shared: &impl SharedLock,
        w: CommitWrite<W>,
        ok: bool,
    ) -> Flushed<B, W> {
        self.io_buf = Some(w.buf);
        if !ok {
            shared.with(|s| s.valid = false);
        }
        if self.out {
            self.landed = self.flight.is_some();
            return Flushed {
                due: None,
                next: None,
                error: None,
            };
        }
        let due = self.flight.take();
        self.out = due.is_some();
        let (launched, error) = self.launch_or_fail(shared);
        match launched {
            Launch::Nothing => Flushed {
                due,
                next: None,
                error,
            },
            Launch::Write(w) => Flushed {
                due,
                next: Some(w),
                error,
            },
            // Made only with no batch out: no write was in flight, so
            // `due` is `None`.
            Launch::Due(b) => Flushed {
                due: Some(b),
                next: None,
                error,
            },
        }
    }

    /// Gives back a queue whose completions were all called: what waited
    /// for it is handed out now: the completions of a write that completed
    /// meanwhile, the next write, or the open completions of an invalid
    /// store.
    pub fn give_back(&mut self, shared: &impl SharedLock, batch: B) -> Flushed<B, W> {
        self.spare_batches.put(batch);
        // The completions of a write that completed meanwhile come first.
        let landed = if core::mem::take(&mut self.landed) {
            self.flight.take()
        } else {
            None
        };
        self.out = landed.is_some();
        let (launched, error) = self.launch_or_fail(shared);
        let (due, next) = match launched {
            Launch::Nothing => (landed, None),
            Launch::Write(w) => (landed, Some(w)),
            // Made only with no batch out, so `landed` is `None`.
            Launch::Due(b) => (Some(b), None),
        };
        Flushed { due, next, error }
    }

    /// Whether no write is in flight and no record waits for one.
    pub fn is_idle(&self) -> bool {
        self.flight.is_none() && self.open.is_empty() && !self.full
    }

    /// The merge paths, which read and write the area synchronously: only
    /// while the committer [is idle](Committer::is_idle) (`None` otherwise:
    /// wait for [`Committer::write_done`] or [`Committer::give_back`]).
    pub fn merger(&mut self) -> Option<Merger<'_, A, B, W>> {
        self.is_idle().then_some(Merger(self))
    }

    /// See [`Merger::prepare_merge`].
    fn prepare_merge(
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

    /// See [`Merger::commit_merge`].
    fn commit_merge(
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

    /// The completions of the records not yet in a write.
    /// C: `ps->callbacks`.
    pub const fn open(&self) -> &B {
        &self.open
    }

    /// How many completions a batch holds at most: see "Group commit".
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
