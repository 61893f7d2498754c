// SPDX-License-Identifier: GPL-2.0

//! The persistent exception store: `drivers/md/dm-snap-persistent.c` in safe
//! Rust.
//!
//! The format core (`snap_format`) decides everything: what the header
//! means, what a metadata area holds, where the next exception goes, when
//! to write, what to write. This module does the I/O it asks for and
//! connects it to dm-snapshot through the exception-store abstraction.
//!
//! Locking. `state` (a spinlock) holds the format core's [`Shared`] state;
//! it is taken briefly, never across I/O or a callback, so
//! `prepare_exception` can take it under dm-snapshot's spinlocks. `commit`
//! (a mutex) holds the format core's [`Committer`], which owns the
//! in-memory metadata area and does the commit and merge paths' I/O
//! through [`CowIo`]; `progress` wakes what waits for a commit write to
//! end. `header` (a mutex) owns the header page, which `drop_snapshot`
//! writes while a commit may be running, as in C. Commit completions are
//! called with none of these held: they can re-enter the store.
//!
//! Metadata I/O. Header reads and writes run on the store's own
//! `WQ_MEM_RECLAIM` workqueue (`ksnaphd`), as in C: `drop_snapshot` can be
//! called from the bio submission path. Commit writes are issued without
//! waiting, one at a time, with `REQ_PREFLUSH | REQ_FUA`, and write only
//! the logical blocks of the area that changed since the last write; their
//! completions run on the ordered `WQ_MEM_RECLAIM` queue of the store's
//! I/O scope, which makes the next write of the records committed
//! meanwhile and then calls the completions due (see "The commit
//! pipeline" in `Documentation/design.md`). Merges write synchronously.
//!
//! Memory. Besides the area (one chunk), the completion vectors and the
//! commit write's buffer, a store holds two pages where C holds two more
//! chunks: the header page
//! (the 16-byte header needs no more; chunk 0 is still written whole, the
//! rest of it zeros) and a page of zeros that dm-io writes as often as a
//! chunk of zeros needs.

#![forbid(unsafe_code)]

use crate::{
    dedicated_workqueue::{
        DedicatedQueue,
        Placement, //
    },
    device_mapper::{
        bufio::{
            self,
            BufioClient, //
        },
        exception_store::{
            self,
            Chunk,
            CommitCompletion,
            ExceptionSink,
            ExceptionStore,
            MergeRun,
            Metadata,
            StatusType,
            StatusWriter,
            Store,
            StoreSetup,
            Usage, //
        },
        io::{
            IoClient,
            IoDone,
            IoLease,
            IoPage,
            IoRequest,
            OpFlags,
            Region,
            Submitted,
            ZeroPage, //
        },
        MsgPrefix, //
    },
    snap_format::{
        self as format,
        AreaFill,
        AreaIo,
        AreaWrite,
        Batch,
        BlockSizes,
        Buffers,
        ChunkBits,
        Commit,
        CommitWrite,
        CommitWriteParts,
        Committer,
        DiskHeader,
        Flushed,
        HeaderDecision,
        IoError,
        Layout,
        LogLevel,
        LogicalBlockSize,
        MetadataIo,
        Scan,
        ScanStop,
        Shared,
        SharedLock,
        Stopped,
        TableChunkSize,
        TableStatus, //
    }, //
};
use core::{
    fmt::Write,
    ops::{
        Deref,
        DerefMut, //
    }, //
};
use kernel::{
    alloc::{
        flags::__GFP_NOWARN,
        kvec::PushError,
        KVVec,
        VVec, //
    },
    block::SECTOR_SHIFT,
    error::code::{
        EINVAL,
        EIO,
        ENOMEM, //
    },
    new_mutex,
    new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    str::CStr,
    sync::{
        new_condvar,
        Arc,
        ArcBorrow,
        CondVar,
        Mutex,
        MutexGuard,
        SpinLock, //
    }, //
};

// The format core checks chunk sizes against dm-snapshot's limit without
// the kernel (the tools use it too), the abstraction before it sets one.
const _: () =
    assert!(format::CHUNK_SIZE_LIMIT_SECTORS == exception_store::CHUNK_SIZE_LIMIT_SECTORS);

/// C: `DM_MSG_PREFIX`.
pub(crate) const PREFIX: MsgPrefix = crate::dm_msg_prefix!("persistent snapshot");
const _: () = assert!(PREFIX.is_for(format::DM_MSG_PREFIX));

/// The store type registered as "persistent" and "P".
pub(crate) struct PersistentStore;

/// The state of one store (C: `struct pstore`).
#[pin_data]
pub(crate) struct StoreData {
    /// The state `prepare_exception` and `usage` reach; `None` until
    /// `read_metadata` has run, and for a store that dm-snapshot hands over
    /// without reading.
    #[pin]
    state: SpinLock<Option<Shared>>,
    /// The commit and merge paths; `None` until `read_metadata` has run.
    /// Set after `state`, and neither is unset.
    #[pin]
    commit: Mutex<Option<CommitIo>>,
    /// Signalled under `commit` whenever a commit write ended or a due
    /// batch came back: what a commit or merge told to wait waits for.
    #[pin]
    progress: CondVar,
    /// C: `ps->header_area`, one chunk there; here the page that
    /// `write_header` writes over the start of chunk 0 (all of a smaller
    /// chunk), zeros following it.
    #[pin]
    header: Mutex<IoPage>,
    /// C: `ps->zero_area`, one chunk of zeros there; here one page that
    /// dm-io writes as often as a chunk needs.
    zeros: ZeroPage,
    /// C: `ps->io_client`; the commit writes in flight hold it too.
    io: Arc<IoClient>,
    /// C: `ps->metadata_wq`.
    metadata_wq: DedicatedQueue,
}

/// The commit and merge paths.
struct CommitIo {
    /// C: `ps->area` and `ps->callbacks`: the completions waiting for an
    /// area write, at most `format::batch_capacity()` per batch (an area's
    /// worth as in C, but at most `format::MAX_BATCH`, 2048, 32 KiB), in
    /// kvmalloc memory as C's `kvcalloc`; and the buffer of the commit
    /// write.
    committer: Committer<VVec<u8>, KVVec<CommitCompletion>, IoBuf>,
    /// The commit write in flight, without its buffer (dm-io has it).
    flight: Option<CommitWriteParts>,
}

/// The buffer of the commit write: the bytes the committer copies, in a
/// request dm-io can own while the write is in flight.
struct IoBuf(IoRequest<VVec<u8>, StoreData>);

impl Deref for IoBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// What the committer hands back after a write or a given-back batch.
type StoreFlushed = Flushed<KVVec<CommitCompletion>, IoBuf>;

/// A commit write that ended inside [`StoreData::issue`], with its outcome.
type EndedWrite = (CommitWrite<IoBuf>, bool);

impl IoDone<VVec<u8>> for StoreData {
    /// The commit write completed: its completions are due, the next write
    /// goes out.
    fn io_done(
        this: Arc<Self>,
        request: IoRequest<VVec<u8>, Self>,
        lease: &IoLease,
        result: Result,
    ) {
        let mut guard = this.commit.lock();
        let Some(commit) = Option::as_mut(&mut *guard) else {
            return;
        };
        let Some(parts) = commit.flight.take() else {
            // Not reached: a write in flight has its parts here.
            return;
        };
        let shared = this.state_lock(commit.committer.layout());
        let w = CommitWrite::from_parts(parts, IoBuf(request));
        let f = commit.committer.write_done(&shared, w, result.is_ok());
        this.flushed(guard, f, Some(lease));
    }
}

impl Batch for KVVec<CommitCompletion> {
    type Completion = CommitCompletion;

    fn push(&mut self, done: CommitCompletion) -> Result<(), CommitCompletion> {
        self.push_within_capacity(done)
            .map_err(|PushError(done)| done)
    }

    fn len(&self) -> usize {
        KVVec::len(self)
    }
}

/// The state spinlock as the committer takes it.
struct StateLock<'a> {
    lock: &'a SpinLock<Option<Shared>>,
    layout: Layout,
}

impl SharedLock for StateLock<'_> {
    fn with<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> R {
        let mut state = self.lock.lock();
        match Option::as_mut(&mut *state) {
            Some(shared) => f(shared),
            // Not reached: `read_metadata` sets the state before the
            // committer exists and never unsets it. Were it reached, the
            // committer would see an invalid store and write nothing.
            None => f(&mut Shared::new(self.layout, false)),
        }
    }
}

/// The COW device as the committer uses it: dm-io from the committing
/// thread (a kcopyd worker, or dm-snapshot's merge worker).
struct CowIo<'a> {
    data: &'a StoreData,
    store: &'a Store,
}

/// The positive errno of a failed I/O.
fn io_error(e: Error) -> IoError {
    IoError(e.to_errno().saturating_neg())
}

impl MetadataIo for CowIo<'_> {
    type Area = VVec<u8>;

    fn cow_sectors(&self) -> u64 {
        self.store.cow().nr_sectors()
    }

    fn read_area(&mut self, io: AreaIo, area: &mut VVec<u8>) -> Result<(), IoError> {
        let region = cow_region(self.store, io.sector, io.sectors).map_err(io_error)?;
        self.data.io.read(&region, area, 0).map_err(io_error)
    }

    fn write_area(&mut self, w: &AreaWrite, area: &VVec<u8>) -> Result<(), IoError> {
        let offset = usize::try_from(w.offset).map_err(|_| IoError(format::errno::EINVAL))?;
        let region = cow_region(self.store, w.sector, w.sectors).map_err(io_error)?;
        self.data
            .io
            .write(
                &region,
                area,
                offset,
                OpFlags::PREFLUSH | OpFlags::FUA | OpFlags::SYNC,
            )
            .map_err(io_error)
    }

    fn zero_area(&mut self, io: AreaIo) -> Result<(), IoError> {
        let region = cow_region(self.store, io.sector, io.sectors).map_err(io_error)?;
        self.data.write_zeros(&region).map_err(io_error)
    }

    fn write_header(&mut self, header: DiskHeader) -> Result<(), IoError> {
        self.data
            .write_header(
                self.store,
                header.chunk_size,
                header,
                OpFlags::PREFLUSH | OpFlags::FUA,
            )
            .map_err(io_error)
    }

    fn report(&mut self, error: &format::Error) {
        report(*error);
    }
}

/// Logs a format-core error the way the C store logs the condition, and
/// returns its errno.
fn report(e: format::Error) -> Error {
    match e.c_log_level() {
        Some(LogLevel::Warn) => crate::dm_warn!(PREFIX, "{}", e),
        Some(LogLevel::Err) => crate::dm_err!(PREFIX, "{}", e),
        None => {}
    }
    errno(e)
}

/// The kernel error for a format-core error, without logging.
fn errno(e: format::Error) -> Error {
    Error::from_errno(e.errno().saturating_neg())
}

/// Copies `src` into `dst`, which must be as long.
fn copy_exact(dst: &mut [u8], src: &[u8]) -> Result {
    if dst.len() != src.len() {
        return Err(EINVAL);
    }
    dst.copy_from_slice(src);
    Ok(())
}

/// A chunk-sized buffer of zeros in vmalloc memory (dm-io's `DM_IO_VMA`).
fn chunk_buffer(layout: Layout) -> Result<VVec<u8>> {
    let len = usize::try_from(layout.chunk_bytes()).map_err(|_| EINVAL)?;
    Ok(VVec::from_elem(0u8, len, GFP_KERNEL)?)
}

/// A page in sectors: the most of chunk 0 that the header needs read.
const PAGE_SECTORS: u32 = (PAGE_SIZE >> SECTOR_SHIFT) as u32;

/// The region of `sectors` sectors of the COW device from `sector` on.
fn cow_region(store: &Store, sector: u64, sectors: u32) -> Result<Region<'_>> {
    Region::new(store.cow(), sector, u64::from(sectors))
}

/// The logical block sizes the chunk size must be a multiple of.
fn block_sizes(store: &Store) -> Result<BlockSizes> {
    BlockSizes::new(
        store.origin().logical_block_size(),
        store.cow().logical_block_size(),
    )
    .map_err(report)
}

impl StoreData {
    /// Reads the start of chunk 0, of `chunk_sectors` sectors, on the
    /// metadata workqueue and returns the header bytes. The read covers a
    /// page, or one logical block of the COW device when a block is larger
    /// (a read must cover whole blocks; the chunk is a multiple of the
    /// block), or the whole chunk when it is smaller: a buffer of its own,
    /// as the header is read once per activation. C: `chunk_io(ps,
    /// ps->header_area, 0, REQ_OP_READ, 0)`, which reads the whole chunk.
    fn read_header_block(
        &self,
        store: &Store,
        chunk_sectors: u32,
    ) -> Result<[u8; format::DISK_HEADER_SIZE]> {
        // The whole chunk must lie on the device, as for C's read.
        cow_region(store, 0, chunk_sectors)?;
        let block = store.cow().logical_block_size() >> SECTOR_SHIFT;
        let region = cow_region(store, 0, chunk_sectors.min(PAGE_SECTORS.max(block)))?;
        let mut buf = VVec::from_elem(0u8, region.len(), GFP_KERNEL)?;
        let (io, b) = (&self.io, &mut buf);
        self.metadata_wq
            .run_sync(move || io.read(&region, b, 0))??;
        let mut bytes = [0u8; format::DISK_HEADER_SIZE];
        copy_exact(
            &mut bytes,
            buf.get(..format::DISK_HEADER_SIZE).ok_or(EINVAL)?,
        )?;
        Ok(bytes)
    }

    /// Writes `header` over chunk 0, of `chunk_sectors` sectors, on the
    /// metadata workqueue: the header page, then zeros to the end of the
    /// chunk, in one request. C: `write_header()`, the same bytes from a
    /// chunk-sized buffer.
    fn write_header(
        &self,
        store: &Store,
        chunk_sectors: u32,
        header: DiskHeader,
        flags: OpFlags,
    ) -> Result {
        let mut bytes = [0u8; format::DISK_HEADER_SIZE];
        header.encode(&mut bytes).map_err(report)?;
        let region = cow_region(store, 0, chunk_sectors)?;
        let mut page = self.header.lock();
        page.clear();
        page.write(0, &bytes)?;
        let (io, page, zeros) = (&self.io, &*page, &self.zeros);
        self.metadata_wq
            .run_sync(move || io.write_page_then_zeros(&region, Some(page), zeros, flags))?
    }

    /// Writes zeros over `region` (a metadata area).
    /// C: `zero_disk_area()`, from a chunk of zeros.
    fn write_zeros(&self, region: &Region<'_>) -> Result {
        self.io
            .write_page_then_zeros(region, None, &self.zeros, OpFlags::NONE)
    }

    /// Runs `f` on the shared state under the state spinlock; fails with
    /// `EIO` if the metadata was never read.
    fn with_shared<T>(&self, f: impl FnOnce(&mut Shared) -> Result<T>) -> Result<T> {
        let mut state = self.state.lock();
        let shared = Option::as_mut(&mut *state).ok_or(EIO)?;
        f(shared)
    }

    /// The commit path's view of the state spinlock.
    fn state_lock(&self, layout: Layout) -> StateLock<'_> {
        StateLock {
            lock: &self.state,
            layout,
        }
    }

    /// Whether the store is valid right now (C: `ps->valid`).
    fn is_valid(&self) -> bool {
        Option::as_ref(&*self.state.lock()).is_some_and(Shared::is_valid)
    }

    /// Issues commit write `w` without waiting: zeros over the next area
    /// first when it names one (synchronously, as C's `zero_disk_area()`;
    /// once per area), then the dirty blocks with PREFLUSH|FUA, holding
    /// `lease` (the COW device's). Returns the write with its outcome if it
    /// ended already: it could not be issued, or it completed before dm-io
    /// returned (brd does), for the caller to report to the committer.
    fn issue(
        self: &Arc<Self>,
        commit: &mut CommitIo,
        w: CommitWrite<IoBuf>,
        lease: Option<&IoLease>,
    ) -> Option<EndedWrite> {
        let Some(lease) = lease else {
            // Not reached: every callback after the constructor has one.
            return Some((w, false));
        };
        if let Some(z) = w.zero_first() {
            let zeroed = Region::new(lease.device(), z.sector, u64::from(z.sectors))
                .and_then(|region| self.write_zeros(&region));
            if zeroed.is_err() {
                return Some((w, false));
            }
        }
        let (parts, IoBuf(request)) = w.into_parts();
        let aw = parts.write();
        match self.io.write_async(
            lease,
            request,
            aw.sector,
            u64::from(aw.sectors),
            OpFlags::PREFLUSH | OpFlags::FUA | OpFlags::SYNC,
            self.clone(),
        ) {
            Ok(Submitted::InFlight) => {
                commit.flight = Some(parts);
                None
            }
            // Done already (brd, say): no round trip through the queue.
            Ok(Submitted::Completed(request, result)) => Some((
                CommitWrite::from_parts(parts, IoBuf(request)),
                result.is_ok(),
            )),
            Err((_, request)) => Some((CommitWrite::from_parts(parts, IoBuf(request)), false)),
        }
    }

    /// Takes what the committer handed back and works it off until nothing
    /// is left: issues the next write, calls the due completions in order
    /// with no lock held, each with the store's validity at that moment (a
    /// completion may invalidate the store), and gives their batch back;
    /// wakes what waits for progress.
    fn flushed<'a>(
        self: &'a Arc<Self>,
        mut guard: MutexGuard<'a, Option<CommitIo>>,
        mut f: StoreFlushed,
        lease: Option<&IoLease>,
    ) {
        loop {
            if let Some(error) = f.error.take() {
                report(error);
            }
            if let (Some(w), Some(commit)) = (f.next.take(), Option::as_mut(&mut *guard)) {
                if let Some((w, ok)) = self.issue(commit, w, lease) {
                    // It ended already. With `f.due` out, the committer
                    // keeps this write's completions until that batch is
                    // given back (one batch is out at a time), so `due`
                    // holds one batch at most.
                    let shared = self.state_lock(commit.committer.layout());
                    let ended = commit.committer.write_done(&shared, w, ok);
                    f = Flushed {
                        due: f.due.or(ended.due),
                        ..ended
                    };
                    continue;
                }
            }
            self.progress.notify_all();
            let Some(mut batch) = f.due.take() else {
                return;
            };
            drop(guard);
            for done in batch.drain_all() {
                done.complete(self.is_valid());
            }
            guard = self.commit.lock();
            let Some(commit) = Option::as_mut(&mut *guard) else {
                return;
            };
            let shared = self.state_lock(commit.committer.layout());
            f = commit.committer.give_back(&shared, batch);
        }
    }
}

/// Reads metadata areas at activation: through dm-bufio, which prefetches
/// the following areas (a window of `format::prefetch_window()` areas,
/// 1 MiB at 4 KiB chunks, C's twelve areas from 128 KiB chunks on), or
/// with dm-io for chunks dm-bufio does not take
/// (over [`bufio::MAX_BLOCK_SIZE`]; such an area holds a quarter of a
/// million exceptions or more, so there is rarely a second one to
/// prefetch).
enum AreaReader<'a> {
    Bufio(BufioClient<'a>),
    Direct { io: &'a IoClient, buf: VVec<u8> },
}

impl<'a> AreaReader<'a> {
    fn new(store: &'a Store, data: &'a StoreData, layout: Layout) -> Result<Self> {
        let chunk_bytes = usize::try_from(layout.chunk_bytes()).map_err(|_| EINVAL)?;
        if chunk_bytes > bufio::MAX_BLOCK_SIZE {
            return Ok(Self::Direct {
                io: &data.io,
                buf: chunk_buffer(layout)?,
            });
        }
        let mut client = BufioClient::new(store.cow(), chunk_bytes)?;
        // The area read and the window ahead of it stay in the cache.
        let prefetch = u32::try_from(format::prefetch_window(layout)).unwrap_or(u32::MAX);
        client.set_minimum_buffers(prefetch.saturating_add(1));
        Ok(Self::Bufio(client))
    }

    fn prefetch(&self, chunk: u64) {
        if let Self::Bufio(client) = self {
            client.prefetch(chunk, 1);
        }
    }

    /// Runs `f` on the bytes of chunk `chunk`; dm-bufio then forgets them.
    fn with_chunk<T>(
        &mut self,
        store: &Store,
        layout: Layout,
        chunk: u64,
        f: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        match self {
            Self::Bufio(client) => {
                let block = client.read(chunk)?;
                let out = f(&block);
                drop(block);
                client.forget(chunk);
                out
            }
            Self::Direct { io, buf } => {
                let sector = layout.chunk_to_sector(chunk).ok_or(EINVAL)?;
                let region = cow_region(store, sector, layout.chunk_sectors())?;
                io.read(&region, buf, 0)?;
                f(buf)
            }
        }
    }
}

/// Why the activation scan's visitor stopped it.
enum Stop {
    /// An exception of the area uses COW chunk `chunk`, which an earlier
    /// one uses too.
    Duplicate { chunk: u64 },
    /// Recording the exception failed.
    Kernel(Error),
}

impl PersistentStore {
    /// Reads chunk 0 with the table's (or the default) chunk size and
    /// decides what it holds. C: `read_header()`.
    fn read_header(data: &StoreData, store: &StoreSetup<'_>) -> Result<HeaderDecision> {
        let blocks = block_sizes(store)?;
        let table = TableChunkSize::new(store.chunk_size(), blocks)
            .and_then(|t| t.check_device(store.cow().nr_sectors()))
            .map_err(report)?;
        let bytes = data.read_header_block(store, Layout::new(table.chunk_size).chunk_sectors())?;
        format::read_header(&bytes, table, blocks, |w| {
            crate::dm_warn!(PREFIX, "{}", w);
        })
        .and_then(|d| d.check_device(store.cow().nr_sectors()))
        .map_err(report)
    }

    /// Scans the metadata areas of a valid store, forwarding every exception
    /// to `sink`; leaves the last, partial area in `area`. Two exceptions
    /// sharing a COW chunk refuse the store. C: `read_exceptions()`.
    fn read_exceptions(
        data: &StoreData,
        store: &Store,
        layout: Layout,
        area: &mut VVec<u8>,
        sink: &mut ExceptionSink<'_>,
    ) -> Result<format::ScanResult> {
        let cow_sectors = store.cow().nr_sectors();
        let mut reader = AreaReader::new(store, data, layout)?;
        // Deeper than C's twelve areas, bounded in bytes: see
        // `format::PREFETCH_BYTES`.
        let mut scan =
            Scan::new(layout, cow_sectors).with_prefetch_window(format::prefetch_window(layout));
        let mut used = NewChunks::new();
        let result = loop {
            let next = match scan.next_area() {
                Ok(next) => next,
                Err(e) => return Err(Self::refuse(&scan, e, None)),
            };
            let bound = format::in_order_bound(layout, next.area).ok_or(EINVAL)?;
            while let Some(chunk) = scan.next_prefetch() {
                reader.prefetch(chunk);
            }
            // Ok(Err(stop)) when the visitor stopped the scan; a broken rule
            // is refused (and logged) inside, where the area's bytes are.
            let scanned = reader.with_chunk(store, layout, next.chunk, |block| {
                let fill = scan.scan_area(block, |e| {
                    match used.insert(e.new_chunk, bound) {
                        Ok(true) => {}
                        Ok(false) => return Err(Stop::Duplicate { chunk: e.new_chunk }),
                        Err(err) => return Err(Stop::Kernel(err)),
                    }
                    sink.add(e.old_chunk, e.new_chunk).map_err(Stop::Kernel)
                });
                match fill {
                    // The last, partial area (the scan ends with it)
                    // becomes the in-memory area.
                    Ok(AreaFill::Partial(result)) => {
                        copy_exact(area, block).map(|()| Ok(AreaFill::Partial(result)))
                    }
                    Ok(full @ AreaFill::Full(_)) => Ok(Ok(full)),
                    Err(Stopped {
                        stop: ScanStop::Format(e),
                        scan,
                    }) => Err(Self::refuse(&scan, e, Some(block))),
                    Err(Stopped {
                        stop: ScanStop::Visitor(stop),
                        ..
                    }) => Ok(Err(stop)),
                }
            })?;
            match scanned {
                Ok(AreaFill::Full(rest)) => scan = rest,
                Ok(AreaFill::Partial(result)) => break result,
                Err(Stop::Kernel(e)) => return Err(e),
                Err(Stop::Duplicate { chunk }) => {
                    return Err(Self::duplicate(
                        &mut reader,
                        store,
                        layout,
                        chunk,
                        next.area,
                    ));
                }
            }
        };
        // Areas `0..=result.current_area` were scanned, the partial one last.
        if let Some(chunk) = used.first_duplicate() {
            return Err(Self::duplicate(
                &mut reader,
                store,
                layout,
                chunk,
                result.current_area,
            ));
        }
        if let Some(warning) = result.warning {
            crate::dm_warn!(PREFIX, "{}", warning);
        }
        Ok(result)
    }

    /// Refuses the store for the scan's `error`, logged, followed by the
    /// size the COW device needs when the store does not fit it. `area`
    /// holds the bytes of the area being scanned.
    fn refuse(scan: &Scan, error: format::Error, area: Option<&[u8]>) -> Error {
        let advice = scan.cow_too_small(&error, area);
        let errno = report(error);
        if let Some(advice) = advice {
            crate::dm_err!(PREFIX, "{}", advice);
        }
        errno
    }

    /// Refuses the store for two records using COW chunk `chunk`, naming
    /// both: reads the areas `0..=last_area` again to find them (only on
    /// this error).
    fn duplicate(
        reader: &mut AreaReader<'_>,
        store: &Store,
        layout: Layout,
        chunk: u64,
        last_area: u64,
    ) -> Error {
        // The first two records using `chunk`, as (area, index).
        let mut first: Option<(u64, u32)> = None;
        let mut second: Option<(u64, u32)> = None;
        for area in 0..=last_area {
            let Some(location) = layout.area_location(area) else {
                break;
            };
            let found = reader.with_chunk(store, layout, location, |block| {
                let mut from = 0u32;
                while second.is_none() {
                    let Some(index) = format::find_new_chunk(block, chunk, from) else {
                        break;
                    };
                    if first.is_none() {
                        first = Some((area, index));
                    } else {
                        second = Some((area, index));
                    }
                    from = index.saturating_add(1);
                }
                Ok(())
            });
            if let Err(e) = found {
                return e;
            }
            if second.is_some() {
                break;
            }
        }
        match (first, second) {
            (Some((first_area, first_index)), Some((area, index))) => {
                report(format::Error::DuplicateNewChunk {
                    chunk,
                    first_area,
                    first_index,
                    area,
                    index,
                })
            }
            _ => EINVAL,
        }
    }
}

/// The COW chunks used by the exceptions scanned so far, in memory
/// bounded by what was read (see `format::in_order_bound`): one bit per
/// chunk below the bound of the area being read, in kvmalloc memory that
/// grows as needed, and a list of the records beyond it, checked when the
/// scan ends. Allocations fail with `ENOMEM` rather than warn.
struct NewChunks {
    words: KVVec<u64>,
    outliers: KVVec<u64>,
}

impl NewChunks {
    fn new() -> Self {
        Self {
            words: KVVec::new(),
            outliers: KVVec::new(),
        }
    }

    /// Adds `chunk`, used by a record of an area whose in-order bound is
    /// `bound`; `Ok(false)` if an earlier exception used it (an outlier is
    /// only checked by [`NewChunks::first_duplicate`]).
    fn insert(&mut self, chunk: u64, bound: u64) -> Result<bool> {
        if chunk >= bound {
            self.outliers.push(chunk, GFP_KERNEL | __GFP_NOWARN)?;
            return Ok(true);
        }
        let need = ChunkBits::words_for(chunk).ok_or(EINVAL)?;
        if need > self.words.len() {
            // Double, to keep growth amortized, but not past the bound.
            let cap = ChunkBits::words_for(bound.saturating_sub(1)).ok_or(EINVAL)?;
            let len = need
                .max(self.words.len().saturating_mul(2))
                .min(cap)
                .max(need);
            self.words.resize(len, 0, GFP_KERNEL | __GFP_NOWARN)?;
        }
        ChunkBits::new(&mut self.words).insert(chunk).ok_or(EINVAL)
    }

    /// A chunk that two records use, among those the outliers take part
    /// in, if any. Sorts the outliers.
    fn first_duplicate(&mut self) -> Option<u64> {
        self.outliers.sort_unstable();
        let bits = ChunkBits::new(&mut self.words);
        let mut prev = None;
        for &chunk in self.outliers.iter() {
            if prev == Some(chunk) || bits.contains(chunk) {
                return Some(chunk);
            }
            prev = Some(chunk);
        }
        None
    }
}

#[vtable]
impl ExceptionStore for PersistentStore {
    type Data = Arc<StoreData>;

    /// C: `persistent_ctr()`.
    fn new(store: &mut StoreSetup<'_>, options: Option<&CStr>) -> Result<Self::Data> {
        let Ok(metadata_wq) = DedicatedQueue::builder(Placement::PerCpu)
            .mem_reclaim()
            .build(c"ksnaphd", kernel::static_lock_class!())
        else {
            crate::dm_err!(PREFIX, "{}", format::messages::WORKQUEUE_FAILED);
            return Err(ENOMEM);
        };
        match format::parse_options(options.map(CStr::to_bytes)) {
            Ok(overflow) => store.set_userspace_supports_overflow(overflow),
            Err(unsupported) => {
                crate::dm_err!(PREFIX, "{}", unsupported);
                return Err(EINVAL);
            }
        }
        let io = Arc::new(IoClient::new()?, GFP_KERNEL)?;
        let header = IoPage::new()?;
        let zeros = ZeroPage::new()?;
        Arc::pin_init(
            try_pin_init!(StoreData {
                state <- new_spinlock!(None, "dm_snap_persistent:state"),
                commit <- new_mutex!(None, "dm_snap_persistent:commit"),
                progress <- new_condvar!("dm_snap_persistent:progress"),
                header <- new_mutex!(header, "dm_snap_persistent:header"),
                zeros,
                io,
                metadata_wq,
            }),
            GFP_KERNEL,
        )
    }

    /// C: `persistent_read_metadata()` with `read_header()`.
    fn read_metadata(
        data: ArcBorrow<'_, StoreData>,
        store: &mut StoreSetup<'_>,
        sink: &mut ExceptionSink<'_>,
    ) -> Result<Metadata> {
        let decision = Self::read_header(&data, store)?;
        let layout = decision.layout();
        store.set_chunk_size(layout.chunk_sectors())?;
        let write_block =
            LogicalBlockSize::new(store.cow().logical_block_size()).map_err(report)?;

        // Buffers of the final chunk size. C: `alloc_area()` and the
        // `kvcalloc()` of `ps->callbacks`.
        let mut area = chunk_buffer(layout)?;
        let capacity = usize::try_from(format::batch_capacity(layout)).map_err(|_| EINVAL)?;
        let batches = [
            KVVec::with_capacity(capacity, GFP_KERNEL)?,
            KVVec::with_capacity(capacity, GFP_KERNEL)?,
            KVVec::with_capacity(capacity, GFP_KERNEL)?,
        ];
        let io_len = format::io_buffer_len(layout, write_block).ok_or(EINVAL)?;
        let io = IoBuf(IoRequest::new(
            VVec::from_elem(0u8, io_len, GFP_KERNEL)?,
            GFP_KERNEL,
        )?);
        let buffers = move |area| Buffers { area, batches, io };

        let (made, metadata) = match decision {
            HeaderDecision::New(_) => {
                let mut io = CowIo { data: &data, store };
                let made = Committer::create(&mut io, layout, write_block, buffers(area));
                (made, Metadata::Valid)
            }
            HeaderDecision::Invalid(_) => {
                let made = Committer::new_invalid(layout, write_block, buffers(area));
                (made, Metadata::Invalid)
            }
            HeaderDecision::Valid(_) => {
                // Writes nothing, as C: the COW device may be read-only.
                // The garbage the scan cleared after the end marker goes
                // back to disk with the first commit.
                let scan = Self::read_exceptions(&data, store, layout, &mut area, sink)?;
                let made = Committer::from_scan(layout, write_block, &scan, buffers(area));
                (made, Metadata::Valid)
            }
        };
        let (shared, committer) = made.map_err(report)?;
        *data.state.lock() = Some(shared);
        *data.commit.lock() = Some(CommitIo {
            committer,
            flight: None,
        });
        Ok(metadata)
    }

    /// C: `persistent_prepare_exception()`. Runs under dm-snapshot's
    /// spinlock: takes only our spinlock, allocates nothing.
    fn prepare_exception(
        data: ArcBorrow<'_, StoreData>,
        store: &Store,
        _old_chunk: Chunk,
    ) -> Result<Chunk> {
        let cow_sectors = store.cow().nr_sectors();
        data.with_shared(|s| s.prepare_exception(cow_sectors).map_err(errno))
    }

    /// C: `persistent_commit_exception()`.
    fn commit_exception(
        data: ArcBorrow<'_, StoreData>,
        store: &Store,
        exception: exception_store::Exception,
        valid: bool,
        done: CommitCompletion,
    ) {
        let e = format::Exception {
            old_chunk: exception.old_chunk,
            new_chunk: exception.new_chunk,
        };
        let data: Arc<StoreData> = data.into();
        let lease = store.io_lease().ok();
        let mut done = done;
        let mut guard = data.commit.lock();
        loop {
            let Some(commit) = Option::as_mut(&mut *guard) else {
                // Not reached: dm-snapshot commits only exceptions it
                // prepared.
                drop(guard);
                done.complete(false);
                return;
            };
            let shared = data.state_lock(commit.committer.layout());
            let mut io = CowIo { data: &data, store };
            let f = match commit
                .committer
                .commit_exception(&shared, &mut io, e, valid, done)
            {
                Commit::Queued => return,
                Commit::Write(w) => match data.issue(commit, w, lease.as_ref()) {
                    Some((w, ok)) => commit.committer.write_done(&shared, w, ok),
                    None => return,
                },
                Commit::Due(batch) => Flushed {
                    due: Some(batch),
                    next: None,
                    error: None,
                },
                Commit::Failed(failed) => {
                    drop(guard);
                    failed.complete(false);
                    return;
                }
                Commit::Wait(waiting) => {
                    // The area is full and its write waits for the one in
                    // flight, or a batch's worth is waiting already: wait
                    // for that write to end. kcopyd waits here as C's
                    // commits wait for every write.
                    done = waiting;
                    data.progress.wait(&mut guard);
                    continue;
                }
            };
            data.flushed(guard, f, lease.as_ref());
            return;
        }
    }

    /// C: `persistent_prepare_merge()`.
    fn prepare_merge(data: ArcBorrow<'_, StoreData>, store: &Store) -> Result<Option<MergeRun>> {
        let mut guard = data.commit.lock();
        let run = loop {
            let commit = Option::as_mut(&mut *guard).ok_or(EIO)?;
            let shared = data.state_lock(commit.committer.layout());
            let mut io = CowIo { data: &data, store };
            if let Some(mut merger) = commit.committer.merger() {
                break merger.prepare_merge(&shared, &mut io).map_err(report)?;
            }
            // A commit write is in flight: merging starts after it.
            data.progress.wait(&mut guard);
        };
        Ok(run.map(|run| MergeRun {
            last_old_chunk: run.last_old_chunk,
            last_new_chunk: run.last_new_chunk,
            count: run.count,
        }))
    }

    /// C: `persistent_commit_merge()`.
    fn commit_merge(data: ArcBorrow<'_, StoreData>, store: &Store, count: u32) -> Result {
        let mut guard = data.commit.lock();
        loop {
            let commit = Option::as_mut(&mut *guard).ok_or(EIO)?;
            let shared = data.state_lock(commit.committer.layout());
            let mut io = CowIo { data: &data, store };
            if let Some(mut merger) = commit.committer.merger() {
                return merger.commit_merge(&shared, &mut io, count).map_err(report);
            }
            data.progress.wait(&mut guard);
        }
    }

    /// C: `persistent_drop_snapshot()`. The header is written with
    /// `REQ_FUA` (C: a plain write), so the invalidation is durable when
    /// this returns.
    fn drop_snapshot(data: ArcBorrow<'_, StoreData>, store: &Store) {
        // Never read: nothing on disk is ours to mark.
        let Ok(header) = data.with_shared(|s| Ok(s.drop_snapshot())) else {
            return;
        };
        if data
            .write_header(store, store.chunk_size(), header, OpFlags::FUA)
            .is_err()
        {
            crate::dm_warn!(PREFIX, "{}", format::messages::DROP_WRITE_HEADER_FAILED);
        }
    }

    /// C: `persistent_status()`.
    fn status(
        _data: ArcBorrow<'_, StoreData>,
        store: &Store,
        kind: StatusType,
        out: &mut StatusWriter<'_>,
    ) {
        if kind == StatusType::Table {
            let status = TableStatus {
                userspace_supports_overflow: store.userspace_supports_overflow(),
                chunk_size: store.chunk_size(),
            };
            let _ = write!(out, "{status}");
        }
    }

    /// C: `persistent_usage()`.
    fn usage(data: ArcBorrow<'_, StoreData>, store: &Store) -> Usage {
        let cow_sectors = store.cow().nr_sectors();
        let state = data.state.lock();
        let usage = match Option::as_ref(&*state) {
            Some(shared) => shared.usage(cow_sectors),
            // Not read (a store dm-snapshot handed over): C reports the
            // values its constructor set, header plus area 0.
            None => {
                let chunk = u64::from(store.chunk_size());
                let initial = chunk.saturating_mul(format::INITIAL_NEXT_FREE);
                Some(format::Usage {
                    total_sectors: cow_sectors,
                    sectors_allocated: initial,
                    metadata_sectors: initial,
                })
            }
        };
        usage
            .map(|u| Usage {
                total_sectors: u.total_sectors,
                sectors_allocated: u.sectors_allocated,
                metadata_sectors: u.metadata_sectors,
            })
            .unwrap_or_default()
    }
}
