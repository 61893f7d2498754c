// SPDX-License-Identifier: GPL-2.0

//! Exception stores of the dm-snapshot target.
//!
//! dm-snapshot keeps, for each snapshot, the map of chunks that were copied
//! out of the origin ("exceptions") in an exception store. A store type is a
//! table of callbacks registered under a name; the snapshot table's store
//! argument (`P`, `N`) picks one. To implement a store, implement
//! [`ExceptionStore`] and keep a [`Registration`] alive for as long as the
//! module is loaded.
//!
//! Per-store data (what the C stores keep in `store->context`) is a
//! [`ForeignOwnable`] created by [`ExceptionStore::new`] and dropped when
//! dm-snapshot destroys the store. Callbacks only get a shared borrow of it:
//! dm-snapshot calls some of them concurrently, so mutable state needs
//! interior mutability with the locking each callback's context allows.
//!
//! C header: [`drivers/md/dm-exception-store.h`](srctree/drivers/md/dm-exception-store.h)

use crate::block_device::BlockDevice;
use core::{
    marker::PhantomData,
    mem::{
        ManuallyDrop,
        MaybeUninit, //
    }, //
};
use kernel::{
    bindings,
    block::SECTOR_SHIFT,
    error::{
        code::{
            EBUSY,
            EINVAL, //
        },
        from_result,
        to_result,
        Result,
        VTABLE_DEFAULT_ERROR, //
    },
    ffi,
    prelude::*,
    str::CStr,
    sync::atomic::{
        Atomic,
        Full,
        Relaxed,
        Release, //
    },
    types::{
        ForeignOwnable,
        Opaque, //
    },
    ThisModule, //
};

/// A chunk number (`chunk_t`): chunk `n` covers sectors
/// `n * chunk_size .. (n + 1) * chunk_size` of a device.
pub type Chunk = u64;

/// The bound dm-snapshot puts on a chunk size, in sectors: a chunk in bytes
/// must fit an `int` (`INT_MAX >> SECTOR_SHIFT`, as
/// `dm_exception_store_set_chunk_size()` checks). The largest chunk size a
/// store can set is the largest power of two below it, 2^21 sectors.
pub const CHUNK_SIZE_LIMIT_SECTORS: u32 = (i32::MAX as u32) >> SECTOR_SHIFT;

type Borrowed<'a, T> = <<T as ExceptionStore>::Data as ForeignOwnable>::Borrowed<'a>;

/// An exception: chunk `old_chunk` of the origin is kept in chunk
/// `new_chunk` of the COW device (`struct dm_exception`, less its hash links).
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::Exception;
///
/// // Origin chunk 100's old data is in chunk 2 of the COW device.
/// let e = Exception { old_chunk: 100, new_chunk: 2 };
/// assert_eq!(e, Exception { old_chunk: 100, new_chunk: 2 });
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Exception {
    /// The chunk of the origin.
    pub old_chunk: Chunk,
    /// Where its old data lives on the COW device.
    pub new_chunk: Chunk,
}

/// What [`ExceptionStore::read_metadata`] found on the COW device.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::Metadata;
///
/// // The persistent store's header field `valid`.
/// fn from_header(valid: u32) -> Metadata {
///     if valid == 0 {
///         Metadata::Invalid
///     } else {
///         Metadata::Valid
///     }
/// }
/// assert_eq!(from_header(0), Metadata::Invalid);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Metadata {
    /// The snapshot is usable; its exceptions were passed to the sink.
    Valid,
    /// The snapshot was invalidated earlier (it overflowed, or I/O failed):
    /// it loads, but reports `Invalid` and cannot be read.
    Invalid,
}

/// The run of exceptions [`ExceptionStore::prepare_merge`] offers to merge:
/// the most recent one and how many consecutive ones precede it.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::MergeRun;
///
/// // Exceptions 10 -> 5, 11 -> 6 and 12 -> 7 merge as one run.
/// let run = MergeRun {
///     last_old_chunk: 12,
///     last_new_chunk: 7,
///     count: 3,
/// };
/// assert_eq!(run.last_old_chunk + 1 - u64::from(run.count), 10);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MergeRun {
    /// The origin chunk of the most recent exception.
    pub last_old_chunk: Chunk,
    /// The COW chunk of the most recent exception.
    pub last_new_chunk: Chunk,
    /// The number of exceptions in the run, at least 1: the most recent one
    /// and those before it whose chunks both decrease by one each.
    pub count: u32,
}

/// How full a store is, in sectors, as `dmsetup status` reports it.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::Usage;
///
/// // 4 KiB chunks on a 1 MiB COW device: the header, one area, three chunks.
/// let u = Usage {
///     total_sectors: 2048,
///     sectors_allocated: 5 * 8,
///     metadata_sectors: 2 * 8,
/// };
/// assert!(u.metadata_sectors <= u.sectors_allocated);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Usage {
    /// The size of the COW device.
    pub total_sectors: u64,
    /// The sectors in use: data chunks, metadata and header.
    pub sectors_allocated: u64,
    /// The sectors in use for metadata and header.
    pub metadata_sectors: u64,
}

/// Which status dm asks for (`status_type_t`).
///
/// # Examples
///
/// ```
/// use core::fmt::Write;
/// use crate::device_mapper::exception_store::{StatusType, StatusWriter};
///
/// // The persistent store's table arguments: " P 16", or " PO 16".
/// fn table(kind: StatusType, overflow: bool, chunk: u32, out: &mut StatusWriter<'_>) {
///     if kind == StatusType::Table {
///         let _ = write!(out, " {} {}", if overflow { "PO" } else { "P" }, chunk);
///     }
/// }
/// let mut buf = [0u8; 16];
/// table(StatusType::Table, true, 16, &mut StatusWriter::new(&mut buf));
/// assert!(buf.starts_with(b" PO 16\0"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StatusType {
    /// `STATUSTYPE_INFO` (`dmsetup status`).
    Info,
    /// `STATUSTYPE_TABLE` (`dmsetup table`): the store's table arguments.
    Table,
    /// `STATUSTYPE_IMA`: what IMA measures.
    Ima,
}

/// The store a callback is called for (`struct dm_exception_store`).
///
/// dm-snapshot writes some of the store's fields itself, outside the
/// store's callbacks: `chunk_size` (set to 0 in the snapshot constructor
/// when the metadata will be handed over, without its mask and shift),
/// and `snap` and `userspace_supports_overflow` (while handing the store
/// over to a new table in `snapshot_resume()`).
/// The handover runs under both snapshots' locks (`snap->lock`, for
/// writing). The table status (`STATUSTYPE_TABLE`, which calls
/// [`ExceptionStore::status`]) took no lock in Linux 7.3, so a
/// `dmsetup table` of a new table, live once `dm_swap_table()` returned,
/// could load the store that the resume then hands over to the old
/// snapshot, and use it while the old table is destroyed with it. The patch
/// series this code requires (`patches/`, "dm snapshot: hold the snapshot
/// lock for the store's table status") makes dm-snapshot hold `snap->lock`
/// for reading around that call. The fields are still read once per call
/// with `READ_ONCE()` semantics, and not assumed to be consistent with each
/// other, so that no reader here depends on which lock its caller holds.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::Store;
///
/// // How many chunks of the store's size the COW device holds.
/// fn cow_chunks(store: &Store) -> u64 {
///     match store.chunk_size() {
///         0 => 0,
///         c => store.cow().nr_sectors() / u64::from(c),
///     }
/// }
/// ```
///
/// # Invariants
///
/// - `self.0` is a live `struct dm_exception_store` for the lifetime of
///   every `&Store`, and its `snap` points to a live snapshot, whichever of
///   the two of a handover it is.
/// - `chunk_size`, `chunk_mask`, `chunk_shift`, `snap` and
///   `userspace_supports_overflow` are written only by dm-snapshot as
///   above or through a [`StoreSetup`]; the other fields that the
///   accessors read are not written while a `&Store` exists.
#[repr(transparent)]
pub struct Store(Opaque<bindings::dm_exception_store>);

// SAFETY: dm-snapshot calls a store's callbacks from several threads; the
// accessors read the fields that dm-snapshot may write concurrently with
// atomic loads (`READ_ONCE()`), and the others are not written meanwhile
// (type invariants).
unsafe impl Sync for Store {}

impl Store {
    /// # Safety
    ///
    /// `ptr` must point to a live `struct dm_exception_store` whose `snap`
    /// is a live snapshot, valid for `'a`, whose fields are written during
    /// `'a` only as the type invariants allow.
    unsafe fn from_raw<'a>(ptr: *mut bindings::dm_exception_store) -> &'a Self {
        // SAFETY: `Store` is a transparent wrapper; the caller guarantees
        // validity for `'a`.
        unsafe { &*ptr.cast::<Self>() }
    }

    fn raw(&self) -> *mut bindings::dm_exception_store {
        self.0.get()
    }

    /// The chunk size in sectors (`store->chunk_size`): a power of two, or 0
    /// while no chunk size is known yet (the table gave 0 and metadata was
    /// not read, or the metadata is to be handed over).
    pub fn chunk_size(&self) -> u32 {
        // SAFETY: The store is live and the field aligned (type invariant,
        // a C struct). Its writers are a `StoreSetup` of this store, which
        // excludes the store's other callbacks (the `StoreSetup`
        // invariant) and stores atomically, and dm-snapshot's constructor
        // and handover, which run before the table is live or under both
        // snapshots' locks: no write races with this atomic load.
        unsafe { Atomic::from_ptr(&raw mut (*self.raw()).chunk_size) }.load(Relaxed)
    }

    /// Whether the table asked for overflow to be reported rather than
    /// invalidating the snapshot (`store->userspace_supports_overflow`,
    /// the `O` of `PO`). A handover to a new table may change it while
    /// [`ExceptionStore::status`] runs: the value is the old or the new one.
    pub fn userspace_supports_overflow(&self) -> bool {
        // SAFETY: The store is live and the field aligned (type invariant).
        // Its writers are `StoreSetup` and dm-snapshot's handover, which
        // runs under both snapshots' locks for writing. `status`, its only
        // reader here, holds the lock for reading with the series'
        // dm-snapshot patch (see `Store`), so it does not meet the
        // handover's plain store; and the load is atomic, so a caller
        // without the lock would add no data race of its own.
        unsafe { Atomic::from_ptr(&raw mut (*self.raw()).userspace_supports_overflow) }
            .load(Relaxed)
    }

    /// The snapshot the store belongs to: one of the two of a handover.
    fn snap(&self) -> *mut bindings::dm_snapshot {
        // SAFETY: The store is live and the field aligned (type invariant);
        // `snap` is written by the handover only, under both snapshots'
        // locks, so as for `userspace_supports_overflow` it is read once,
        // volatile, as `READ_ONCE()` of a pointer.
        unsafe { (&raw const (*self.raw()).snap).read_volatile() }
    }

    /// The COW device, where the store keeps its data (`dm_snap_cow()`).
    pub fn cow(&self) -> &BlockDevice {
        // SAFETY: The snapshot is live (type invariant), and a handover
        // moves the store between two snapshots of the same COW device; the
        // snapshot holds its COW `dm_dev` open while it lives.
        unsafe { BlockDevice::from_raw((*bindings::dm_snap_cow(self.snap())).bdev) }
    }

    /// The origin device (`dm_snap_origin()`).
    pub fn origin(&self) -> &BlockDevice {
        // SAFETY: As in `cow`, for the origin `dm_dev`.
        unsafe { BlockDevice::from_raw((*bindings::dm_snap_origin(self.snap())).bdev) }
    }
}

/// A [`Store`] in a phase where dm-snapshot calls nothing else on it (its
/// constructor and [`ExceptionStore::read_metadata`]), so its settings can be
/// changed.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::StoreSetup;
///
/// // A constructor: the table's chunk size, unless the metadata will say.
/// fn setup(store: &mut StoreSetup<'_>, table_chunk: u32, overflow: bool) -> Result {
///     if table_chunk != 0 {
///         store.set_chunk_size(table_chunk)?;
///     }
///     store.set_userspace_supports_overflow(overflow);
///     Ok(())
/// }
/// ```
///
/// # Invariants
///
/// For `'a`, dm-snapshot runs no other callback of `store` and writes none
/// of its chunk-size fields or `userspace_supports_overflow`: the
/// snapshot's constructor is running the store's `ctr` or `read_metadata`,
/// and the table being built is not live yet, so no status can run either.
/// It may read the chunk-size fields meanwhile: the snapshot is registered
/// with its origin before `read_metadata`, so another snapshot's
/// constructor (`__insert_snapshot()`), an origin resume
/// (`__minimum_chunk_size()`) and an origin write (`sector_to_chunk()` in
/// `__origin_write()`, before it skips the snapshot as not active yet) can
/// read them. Those reads are `READ_ONCE()` (the series' patch "dm
/// snapshot: mark the accesses to a store's chunk size that can race"),
/// and the fields are written here with atomic stores.
pub struct StoreSetup<'a> {
    store: &'a Store,
}

impl core::ops::Deref for StoreSetup<'_> {
    type Target = Store;

    fn deref(&self) -> &Store {
        self.store
    }
}

impl StoreSetup<'_> {
    /// Sets the chunk size, in sectors, with its mask and shift.
    ///
    /// This is what `dm_exception_store_set_chunk_size()` does after its
    /// checks against the devices' block sizes, which the caller does (that
    /// function is not exported).
    ///
    /// # Errors
    ///
    /// `EINVAL` if `sectors` is not a power of two or exceeds
    /// [`CHUNK_SIZE_LIMIT_SECTORS`].
    pub fn set_chunk_size(&mut self, sectors: u32) -> Result {
        if !sectors.is_power_of_two() || sectors > CHUNK_SIZE_LIMIT_SECTORS {
            return Err(EINVAL);
        }
        let raw = self.store.raw();
        // SAFETY: The store is live and the fields aligned (`Store`
        // invariant, a C struct), and nothing else writes them in this
        // phase (the `StoreSetup` invariant). What may read them meanwhile
        // (listed at `StoreSetup`) reads with `READ_ONCE()`, an atomic
        // load, so every concurrent access is atomic, as `from_ptr`
        // requires; each reader sees the old value or the new of each
        // field, and none uses them for a snapshot that is not active:
        // the sort and the minimum are computed again when the table is
        // resumed, which orders these stores before the I/O paths.
        unsafe {
            Atomic::from_ptr(&raw mut (*raw).chunk_size).store(sectors, Relaxed);
            Atomic::from_ptr(&raw mut (*raw).chunk_mask).store(sectors.wrapping_sub(1), Relaxed);
            Atomic::from_ptr(&raw mut (*raw).chunk_shift).store(sectors.trailing_zeros(), Relaxed);
        }
        Ok(())
    }

    /// Records whether the table asked for overflow to be reported
    /// (`PO`) rather than invalidating the snapshot.
    pub fn set_userspace_supports_overflow(&mut self, supported: bool) {
        // SAFETY: The store is live and the field aligned (`Store`
        // invariant); nothing else writes it in this phase (the
        // `StoreSetup` invariant), and `Store::userspace_supports_overflow`
        // loads it atomically.
        unsafe {
            Atomic::from_ptr(&raw mut (*self.store.raw()).userspace_supports_overflow)
                .store(supported, Relaxed)
        };
    }
}

/// Where [`ExceptionStore::read_metadata`] reports the exceptions it finds
/// (dm-snapshot's `dm_add_exception()` callback).
///
/// It is neither `Send` nor `Sync` (raw pointers), and exists only as a
/// borrow during `read_metadata`: it cannot leave that call or its thread.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::{Exception, ExceptionSink};
///
/// // The end of a read_metadata: every exception found, in disk order.
/// fn report(found: &[Exception], sink: &mut ExceptionSink<'_>) -> Result {
///     for e in found {
///         sink.add(e.old_chunk, e.new_chunk)?;
///     }
///     Ok(())
/// }
/// ```
///
/// # Invariants
///
/// `callback(context, old, new)` may be called any number of times, from
/// process context on this thread, for `'a`: dm-snapshot passed both to
/// `read_metadata`, which does not return before `'a` ends.
pub struct ExceptionSink<'a> {
    callback:
        unsafe extern "C" fn(*mut ffi::c_void, bindings::chunk_t, bindings::chunk_t) -> ffi::c_int,
    context: *mut ffi::c_void,
    _callback_lifetime: PhantomData<&'a ()>,
}

impl ExceptionSink<'_> {
    /// Hands dm-snapshot one exception read from the COW device.
    ///
    /// # Errors
    ///
    /// The error dm-snapshot returns (`ENOMEM` when it cannot allocate the
    /// exception); the store should stop reading and return it.
    ///
    /// Context: may sleep.
    pub fn add(&mut self, old_chunk: Chunk, new_chunk: Chunk) -> Result {
        // SAFETY: By the type invariant the callback may be called with
        // `context` for `'a`, which has not ended while `self` is borrowed,
        // on this thread (`ExceptionSink` is not `Send`).
        to_result(unsafe { (self.callback)(self.context, old_chunk, new_chunk) })
    }
}

/// The completion of one [`ExceptionStore::commit_exception`]: dm-snapshot
/// waits for it to finish the pending exception (and its bios).
///
/// It must be completed exactly once; dropping it completes it with failure,
/// so a store that loses one fails the exception rather than hanging I/O.
/// Completing it may re-enter the store on the same thread
/// ([`ExceptionStore::drop_snapshot`], [`ExceptionStore::prepare_exception`])
/// and may sleep: complete it without holding any of the store's locks.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::CommitCompletion;
///
/// // After the commit's write: complete once, with its outcome. Returning
/// // early without `done.complete()` would complete it with failure.
/// fn finish(write: Result, done: CommitCompletion) {
///     done.complete(write.is_ok());
/// }
/// ```
///
/// # Invariants
///
/// `callback(context, ..)` has not been called yet; it is called exactly
/// once, by `complete` or by the drop.
pub struct CommitCompletion {
    callback: unsafe extern "C" fn(*mut ffi::c_void, ffi::c_int),
    context: *mut ffi::c_void,
}

// SAFETY: dm-snapshot's commit callback may run on any thread in process
// context.
unsafe impl Send for CommitCompletion {}

impl CommitCompletion {
    /// Returns the completion that calls `callback(context, success)`.
    /// Only the store-type glue (and its tests) make completions.
    ///
    /// # Safety
    ///
    /// `callback` must be safe to call once with `context` from process
    /// context on any thread, at any time until it is called.
    pub(crate) unsafe fn from_raw(
        callback: unsafe extern "C" fn(*mut ffi::c_void, ffi::c_int),
        context: *mut ffi::c_void,
    ) -> Self {
        // INVARIANT: the callback has not been called yet.
        Self { callback, context }
    }

    /// Completes the commit: `success` tells dm-snapshot whether the
    /// exception is on disk; if not, it invalidates the snapshot.
    ///
    /// Completing the last pending commit lets a waiting snapshot
    /// destructor go on; the store's data stays valid until the
    /// `commit_exception` call that was given this completion returns,
    /// because dm-snapshot makes that call from a kcopyd callback and
    /// destroys its kcopyd client, which waits for every job, before the
    /// store.
    ///
    /// Context: may sleep; hold none of the store's locks.
    pub fn complete(self, success: bool) {
        let this = ManuallyDrop::new(self);
        // SAFETY: By the type invariant the callback has not been called;
        // `ManuallyDrop` keeps the drop from calling it again.
        unsafe { (this.callback)(this.context, ffi::c_int::from(success)) };
    }
}

impl Drop for CommitCompletion {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the callback has not been called
        // (`complete` does not run this drop).
        unsafe { (self.callback)(self.context, 0) };
    }
}

/// A writer for status output with the semantics of `DMEMIT`: output past
/// the buffer is cut, and the buffer is always NUL-terminated.
///
/// dm hands the store a buffer it only promises to be writable, so the
/// writer holds it as possibly uninitialised bytes, and only writes them.
///
/// # Examples
///
/// ```
/// use core::fmt::Write;
/// use crate::device_mapper::exception_store::StatusWriter;
///
/// let mut buf = [0xffu8; 8];
/// let mut out = StatusWriter::new(&mut buf);
/// write!(out, " P {}", 1024)?; // cut to the 7 bytes that fit
/// assert_eq!(&buf, b" P 1024\0");
/// ```
///
/// # Invariants
///
/// `len < buf.len()` unless `buf` is empty (`len` is then 0), `buf[..len]`
/// holds the text written and `buf[len]` a NUL; the writer writes only
/// initialised bytes through `buf`, so a buffer lent as `&mut [u8]` holds
/// initialised bytes again when the writer's borrow ends.
pub struct StatusWriter<'a> {
    buf: &'a mut [MaybeUninit<u8>],
    len: usize,
}

impl<'a> StatusWriter<'a> {
    /// Returns a writer to `buf`, emptied (a NUL at its start).
    pub fn new(buf: &'a mut [u8]) -> Self {
        let len = buf.len();
        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and
        // the writer stores only initialised bytes through the slice, so
        // `buf` holds initialised bytes when the borrow ends.
        let buf = unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast(), len) };
        Self::from_uninit(buf)
    }

    /// Returns a writer to a buffer that may be uninitialised, emptied (a
    /// NUL at its start).
    fn from_uninit(buf: &'a mut [MaybeUninit<u8>]) -> Self {
        if let Some(first) = buf.first_mut() {
            first.write(0);
        }
        Self { buf, len: 0 }
    }

    /// The number of bytes written, not counting the NUL.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::fmt::Write for StatusWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // Room for text: the buffer less the NUL.
        let room = self.buf.len().saturating_sub(1).saturating_sub(self.len);
        let n = s.len().min(room);
        let end = self.len.saturating_add(n);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..end), s.as_bytes().get(..n)) {
            for (d, c) in dst.iter_mut().zip(src) {
                d.write(*c);
            }
            self.len = end;
        }
        if let Some(nul) = self.buf.get_mut(self.len) {
            nul.write(0);
        }
        Ok(())
    }
}

/// An exception store type: the callbacks of `struct dm_exception_store_type`.
///
/// dm-snapshot calls them as follows (`drivers/md/dm-snap.c`):
///
/// - [`new`](ExceptionStore::new) and [`read_metadata`](ExceptionStore::read_metadata)
///   in the snapshot constructor, process context, before anything else
///   touches the store. On a table reload dm-snapshot may skip
///   `read_metadata` and hand the old store's state over instead, then
///   destroy the new store: the data must cope with being dropped
///   without `read_metadata` having run.
/// - [`prepare_exception`](ExceptionStore::prepare_exception) under
///   spinlocks: it must not sleep or allocate with `GFP_KERNEL`.
/// - [`commit_exception`](ExceptionStore::commit_exception) from kcopyd's
///   completion, process context, one at a time and in prepare order.
/// - [`usage`](ExceptionStore::usage) under the snapshot's lock (for
///   `dmsetup status`), process context.
/// - [`status`](ExceptionStore::status) for `dmsetup table` under the
///   snapshot's lock for reading (with the series' dm-snapshot patch; see
///   [`Store`]), process context.
/// - [`drop_snapshot`](ExceptionStore::drop_snapshot) when the snapshot is
///   invalidated, under the snapshot's lock, possibly while a commit runs.
/// - [`prepare_merge`](ExceptionStore::prepare_merge) and
///   [`commit_merge`](ExceptionStore::commit_merge) from the merge worker of
///   a `snapshot-merge` target; a type provides both or neither.
///
/// # Examples
///
/// ```
/// use core::sync::atomic::{AtomicU64, Ordering};
/// use crate::device_mapper::exception_store::{
///     Chunk, CommitCompletion, Exception, ExceptionSink, ExceptionStore, Metadata,
///     Registration, StatusType, StatusWriter, Store, StoreSetup, TypeStorage,
/// };
///
/// // A store that keeps nothing on disk and hands out COW chunks in turn.
/// struct Counting;
///
/// #[vtable]
/// impl ExceptionStore for Counting {
///     type Data = KBox<AtomicU64>;
///
///     fn new(store: &mut StoreSetup<'_>, _options: Option<&CStr>) -> Result<Self::Data> {
///         if store.chunk_size() == 0 {
///             store.set_chunk_size(8)?;
///         }
///         Ok(KBox::new(AtomicU64::new(0), GFP_KERNEL)?)
///     }
///
///     fn read_metadata(
///         _next: &AtomicU64,
///         _store: &mut StoreSetup<'_>,
///         _sink: &mut ExceptionSink<'_>,
///     ) -> Result<Metadata> {
///         Ok(Metadata::Valid)
///     }
///
///     fn prepare_exception(next: &AtomicU64, _store: &Store, _old: Chunk) -> Result<Chunk> {
///         Ok(next.fetch_add(1, Ordering::Relaxed))
///     }
///
///     fn commit_exception(
///         _next: &AtomicU64,
///         _store: &Store,
///         _e: Exception,
///         valid: bool,
///         done: CommitCompletion,
///     ) {
///         done.complete(valid);
///     }
///
///     fn status(_next: &AtomicU64, _store: &Store, kind: StatusType, out: &mut StatusWriter<'_>) {
///         if kind == StatusType::Table {
///             let _ = core::fmt::Write::write_str(out, " counting");
///         }
///     }
/// }
///
/// static COUNTING: TypeStorage = TypeStorage::new();
/// # let module = kernel::module::this_module::<crate::LocalModule>();
/// // dmsetup tables may name "counting" while `registration` lives.
/// let registration = Registration::<Counting>::new(&COUNTING, c"counting", module)?;
/// drop(registration);
/// ```
#[vtable]
pub trait ExceptionStore: Sized {
    /// The per-store data, kept in `store->context`.
    type Data: ForeignOwnable + Send + Sync;

    /// Creates the data of a new store (`ctr`). `options` is what follows
    /// the type letter in the table (the `O` of `PO`), if anything.
    ///
    /// Context: process, may sleep.
    fn new(store: &mut StoreSetup<'_>, options: Option<&CStr>) -> Result<Self::Data>;

    /// Reads the store's metadata from the COW device and reports every
    /// exception to `sink`; may set the chunk size (`read_metadata`).
    ///
    /// Context: process, may sleep.
    fn read_metadata(
        data: Borrowed<'_, Self>,
        store: &mut StoreSetup<'_>,
        sink: &mut ExceptionSink<'_>,
    ) -> Result<Metadata>;

    /// Allocates the COW chunk for a new exception of origin chunk
    /// `old_chunk` and returns it (`prepare_exception`).
    ///
    /// Context: atomic (spinlocks held): no sleeping, no `GFP_KERNEL`.
    fn prepare_exception(
        data: Borrowed<'_, Self>,
        store: &Store,
        old_chunk: Chunk,
    ) -> Result<Chunk>;

    /// Records a prepared exception whose data was copied (`valid`) or not,
    /// and completes `done` once it is on disk, or failed
    /// (`commit_exception`).
    ///
    /// Context: process, may sleep; calls are serialised and in prepare
    /// order. See [`CommitCompletion`] on re-entry.
    fn commit_exception(
        data: Borrowed<'_, Self>,
        store: &Store,
        exception: Exception,
        valid: bool,
        done: CommitCompletion,
    );

    /// Returns the most recent exception still to merge and the run of
    /// consecutive ones before it, or `None` if none is left
    /// (`prepare_merge`).
    ///
    /// Context: process, may sleep.
    fn prepare_merge(_data: Borrowed<'_, Self>, _store: &Store) -> Result<Option<MergeRun>> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Forgets the `count` most recent exceptions, which were merged
    /// (`commit_merge`). `count` is at most the run `prepare_merge` returned.
    ///
    /// Context: process, may sleep.
    fn commit_merge(_data: Borrowed<'_, Self>, _store: &Store, _count: u32) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Marks the snapshot invalid in the metadata (`drop_snapshot`).
    ///
    /// Context: process, may sleep; may run concurrently with
    /// `commit_exception`.
    fn drop_snapshot(_data: Borrowed<'_, Self>, _store: &Store) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Writes the store's part of the table line (`status`).
    ///
    /// Context: process. Linux 7.3's dm-snapshot calls it for
    /// [`StatusType::Table`] only, with the snapshot's lock held for reading
    /// (with the series' dm-snapshot patch, see [`Store`]). It may run
    /// concurrently with `prepare_exception` (called under the same lock
    /// for reading) and with the callbacks called without it
    /// (`commit_exception`, `prepare_merge`, `commit_merge`); never with
    /// `usage`, `drop_snapshot` or a handover (which take the lock for
    /// writing), nor with `new`, `read_metadata` or `dtr`.
    fn status(
        data: Borrowed<'_, Self>,
        store: &Store,
        kind: StatusType,
        out: &mut StatusWriter<'_>,
    );

    /// Reports how full the store is (`usage`).
    ///
    /// Context: process, under the snapshot's lock.
    fn usage(_data: Borrowed<'_, Self>, _store: &Store) -> Usage {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// The C callbacks of an [`ExceptionStore`] type.
struct Callbacks<T: ExceptionStore>(PhantomData<T>);

impl<T: ExceptionStore> Callbacks<T> {
    /// Returns the store and a borrow of its data.
    ///
    /// # Safety
    ///
    /// `store` must be a live store of this type whose `context` was set by
    /// `ctr` and not yet released by `dtr`, valid for `'a`; the other
    /// conditions of [`Store::from_raw`] hold.
    unsafe fn get<'a>(store: *mut bindings::dm_exception_store) -> (Borrowed<'a, T>, &'a Store) {
        // SAFETY: The caller guarantees `store` is live and `context` holds
        // our data from `into_foreign`, not yet taken back by `dtr`, which
        // dm-snapshot does not call while other callbacks run.
        unsafe { (T::Data::borrow((*store).context), Store::from_raw(store)) }
    }

    /// # Safety
    ///
    /// dm-snapshot calls this with a newly allocated store whose `snap` is
    /// set, before any other callback; `options` is NULL or a NUL-terminated
    /// string valid for the call.
    unsafe extern "C" fn ctr(
        store: *mut bindings::dm_exception_store,
        options: *mut ffi::c_char,
    ) -> ffi::c_int {
        from_result(|| {
            // SAFETY: The store is new and nothing else uses it during the
            // constructor (the function's safety requirements).
            let store_ref = unsafe { Store::from_raw(store) };
            // INVARIANT: dm-snapshot runs nothing else on a store while it
            // constructs it.
            let mut setup = StoreSetup { store: store_ref };
            let options = if options.is_null() {
                None
            } else {
                // SAFETY: `options` is a NUL-terminated string valid for
                // this call.
                Some(unsafe { CStr::from_char_ptr(options) })
            };
            let data = T::new(&mut setup, options)?;
            // SAFETY: `store` is live; `dtr` takes the data back.
            unsafe { (*store).context = data.into_foreign() };
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// dm-snapshot calls this once, last, for a store whose `ctr` succeeded.
    ///
    /// The data dropped here may hold [`CommitCompletion`]s only if a
    /// commit is still pending, and none is: `snapshot_dtr()` waits until
    /// `pending_exceptions_count` is 0, which every commit's completion
    /// decrements, before it destroys the store. A completion dropped here
    /// would call into a snapshot being freed. Nor does a callback still
    /// run: `commit_exception` is called from kcopyd's job callbacks, and
    /// `snapshot_dtr()` destroys its kcopyd client, which waits for every
    /// job, before the store.
    unsafe extern "C" fn dtr(store: *mut bindings::dm_exception_store) {
        // SAFETY: `context` holds the data `ctr` stored with `into_foreign`;
        // this is the last callback, so no borrow of it is alive.
        let data = unsafe { T::Data::from_foreign((*store).context) };
        drop(data);
    }

    /// # Safety
    ///
    /// dm-snapshot calls this in the snapshot constructor after `ctr`,
    /// while nothing else uses the store; `callback` and `callback_context`
    /// are valid for the call.
    unsafe extern "C" fn read_metadata(
        store: *mut bindings::dm_exception_store,
        callback: Option<
            unsafe extern "C" fn(
                *mut ffi::c_void,
                bindings::chunk_t,
                bindings::chunk_t,
            ) -> ffi::c_int,
        >,
        callback_context: *mut ffi::c_void,
    ) -> ffi::c_int {
        from_result(|| {
            let callback = callback.ok_or(EINVAL)?;
            // SAFETY: The function's safety requirements.
            let (data, store) = unsafe { Self::get(store) };
            // INVARIANT: dm-snapshot reads the metadata in the snapshot's
            // constructor, with nothing else running on the store.
            let mut setup = StoreSetup { store };
            // INVARIANT: dm-snapshot's callback and context are valid for
            // this call, which outlives the sink.
            let mut sink = ExceptionSink {
                callback,
                context: callback_context,
                _callback_lifetime: PhantomData,
            };
            match T::read_metadata(data, &mut setup, &mut sink)? {
                Metadata::Valid => Ok(0),
                Metadata::Invalid => Ok(1),
            }
        })
    }

    /// # Safety
    ///
    /// dm-snapshot calls this for a live store with a valid `e`, under its
    /// pending-exception spinlock.
    unsafe extern "C" fn prepare_exception(
        store: *mut bindings::dm_exception_store,
        e: *mut bindings::dm_exception,
    ) -> ffi::c_int {
        from_result(|| {
            // SAFETY: The function's safety requirements.
            let (data, store) = unsafe { Self::get(store) };
            // SAFETY: `e` is valid; dm-snapshot set `old_chunk`.
            let old_chunk = unsafe { (*e).old_chunk };
            let new_chunk = T::prepare_exception(data, store, old_chunk)?;
            // SAFETY: `e` is valid and ours to fill in.
            unsafe { (*e).new_chunk = new_chunk };
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// dm-snapshot calls this for a live store with a valid `e`, and a
    /// callback that it waits for, to be called exactly once.
    unsafe extern "C" fn commit_exception(
        store: *mut bindings::dm_exception_store,
        e: *mut bindings::dm_exception,
        valid: ffi::c_int,
        callback: Option<unsafe extern "C" fn(*mut ffi::c_void, ffi::c_int)>,
        callback_context: *mut ffi::c_void,
    ) {
        // dm-snapshot always passes its callback.
        let Some(callback) = callback else { return };
        // SAFETY: dm-snapshot's commit callback may be called once, from
        // process context on any thread, and dm-snapshot waits for it.
        let done = unsafe { CommitCompletion::from_raw(callback, callback_context) };
        // SAFETY: The function's safety requirements.
        let (data, store) = unsafe { Self::get(store) };
        // SAFETY: `e` is valid for the call.
        let exception = unsafe {
            Exception {
                old_chunk: (*e).old_chunk,
                new_chunk: (*e).new_chunk,
            }
        };
        T::commit_exception(data, store, exception, valid != 0, done);
    }

    /// # Safety
    ///
    /// dm-snapshot calls this for a live store with valid pointers to fill.
    unsafe extern "C" fn prepare_merge(
        store: *mut bindings::dm_exception_store,
        last_old_chunk: *mut bindings::chunk_t,
        last_new_chunk: *mut bindings::chunk_t,
    ) -> ffi::c_int {
        from_result(|| {
            // SAFETY: The function's safety requirements.
            let (data, store) = unsafe { Self::get(store) };
            let Some(run) = T::prepare_merge(data, store)? else {
                return Ok(0);
            };
            let count = ffi::c_int::try_from(run.count).map_err(|_| EINVAL)?;
            if count == 0 {
                return Err(EINVAL);
            }
            // SAFETY: Both pointers are valid for writes.
            unsafe {
                *last_old_chunk = run.last_old_chunk;
                *last_new_chunk = run.last_new_chunk;
            }
            Ok(count)
        })
    }

    /// # Safety
    ///
    /// dm-snapshot calls this for a live store.
    unsafe extern "C" fn commit_merge(
        store: *mut bindings::dm_exception_store,
        nr_merged: ffi::c_int,
    ) -> ffi::c_int {
        from_result(|| {
            let count = u32::try_from(nr_merged).map_err(|_| EINVAL)?;
            // SAFETY: The function's safety requirements.
            let (data, store) = unsafe { Self::get(store) };
            T::commit_merge(data, store, count)?;
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// dm-snapshot calls this for a live store.
    unsafe extern "C" fn drop_snapshot(store: *mut bindings::dm_exception_store) {
        // SAFETY: The function's safety requirements.
        let (data, store) = unsafe { Self::get(store) };
        T::drop_snapshot(data, store);
    }

    /// # Safety
    ///
    /// dm-snapshot calls this for a live store with `result` valid for
    /// writes of `maxlen` bytes.
    unsafe extern "C" fn status(
        store: *mut bindings::dm_exception_store,
        status: bindings::status_type_t,
        result: *mut ffi::c_char,
        maxlen: ffi::c_uint,
    ) -> ffi::c_uint {
        let kind = match status {
            bindings::status_type_t_STATUSTYPE_INFO => StatusType::Info,
            bindings::status_type_t_STATUSTYPE_TABLE => StatusType::Table,
            bindings::status_type_t_STATUSTYPE_IMA => StatusType::Ima,
            _ => return 0,
        };
        let Ok(maxlen) = usize::try_from(maxlen) else {
            return 0;
        };
        if result.is_null() || maxlen == 0 {
            return 0;
        }
        // SAFETY: `result` is valid for writes of `maxlen` bytes, and only
        // this callback uses it while it runs; the bytes need not be
        // initialised, which `MaybeUninit` allows.
        let buf =
            unsafe { core::slice::from_raw_parts_mut(result.cast::<MaybeUninit<u8>>(), maxlen) };
        let mut out = StatusWriter::from_uninit(buf);
        // SAFETY: The function's safety requirements.
        let (data, store) = unsafe { Self::get(store) };
        T::status(data, store, kind, &mut out);
        ffi::c_uint::try_from(out.len()).unwrap_or(0)
    }

    /// # Safety
    ///
    /// dm-snapshot calls this for a live store with valid pointers to fill.
    unsafe extern "C" fn usage(
        store: *mut bindings::dm_exception_store,
        total_sectors: *mut bindings::sector_t,
        sectors_allocated: *mut bindings::sector_t,
        metadata_sectors: *mut bindings::sector_t,
    ) {
        // SAFETY: The function's safety requirements.
        let (data, store) = unsafe { Self::get(store) };
        let usage = T::usage(data, store);
        // SAFETY: The three pointers are valid for writes.
        unsafe {
            *total_sectors = usage.total_sectors;
            *sectors_allocated = usage.sectors_allocated;
            *metadata_sectors = usage.metadata_sectors;
        }
    }

    /// The type table for `name`, owned by `module`.
    fn type_table(
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> bindings::dm_exception_store_type {
        bindings::dm_exception_store_type {
            name: name.as_char_ptr(),
            module: module.as_ptr(),
            ctr: Some(Self::ctr),
            dtr: Some(Self::dtr),
            read_metadata: Some(Self::read_metadata),
            prepare_exception: Some(Self::prepare_exception),
            commit_exception: Some(Self::commit_exception),
            prepare_merge: if T::HAS_PREPARE_MERGE && T::HAS_COMMIT_MERGE {
                Some(Self::prepare_merge)
            } else {
                None
            },
            commit_merge: if T::HAS_PREPARE_MERGE && T::HAS_COMMIT_MERGE {
                Some(Self::commit_merge)
            } else {
                None
            },
            drop_snapshot: if T::HAS_DROP_SNAPSHOT {
                Some(Self::drop_snapshot)
            } else {
                None
            },
            status: Some(Self::status),
            usage: if T::HAS_USAGE {
                Some(Self::usage)
            } else {
                None
            },
            list: pin_init::zeroed(),
        }
    }
}

/// The home of one registered exception store type: dm-snapshot's type
/// table (`struct dm_exception_store_type`), in a `static` of the module.
///
/// dm-snapshot keeps a pointer to the table in every store of the type
/// (`store->type`) and reads it until after the store's last callback
/// (`dm_exception_store_destroy()` calls `dtr`, then reads `type->module`).
/// Stores hold a reference to the table's module, not to a [`Registration`],
/// so the table must live as long as the module: a `static` does, whenever
/// the registration is dropped.
///
/// A storage is registered at most once in the module's life: after a
/// registration of it ended, a store of the type may still read the table,
/// which must therefore never be written again.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::{ExceptionStore, Registration, TypeStorage};
///
/// static STORAGE: TypeStorage = TypeStorage::new();
///
/// // Registered at most once: a second registration of the same storage,
/// // even after the first was dropped, fails with `EBUSY`.
/// fn register<T: ExceptionStore>(module: &'static ThisModule) -> Result<Registration<T>> {
///     Registration::new(&STORAGE, c"example", module)
/// }
/// ```
///
/// # Invariants
///
/// - `claimed` only goes from `false` to `true`, except in the
///   [`Registration::new`] that set it, when registering failed and nothing
///   else saw `table`.
/// - While `claimed` is `false`, nothing reads or writes `table`.
/// - Once a registration succeeded, `table` is written only by dm's list
///   functions (its `list` field, under dm's lock).
pub struct TypeStorage {
    table: Opaque<bindings::dm_exception_store_type>,
    claimed: Atomic<bool>,
}

// SAFETY: `table` is written by one thread only, the one that claimed it
// (`claimed` is an atomic exchange), before it is published to dm-snapshot
// by `dm_exception_store_type_register()`, which takes dm's lock; after
// that, only dm's list functions write it, under the same lock, and
// everybody else reads it (the type invariants).
unsafe impl Sync for TypeStorage {}

impl TypeStorage {
    /// Returns an empty storage, for a `static`.
    pub const fn new() -> Self {
        Self {
            table: Opaque::uninit(),
            claimed: Atomic::new(false),
        }
    }
}

impl Default for TypeStorage {
    fn default() -> Self {
        Self::new()
    }
}

/// The registration of an [`ExceptionStore`] type under one name, for
/// example "persistent"; a type known under two names, as the C persistent
/// store is ("persistent" and "P"), takes two registrations, registered in
/// turn.
///
/// The type's `module` is the registering module, so dm-snapshot holds a
/// reference to it while a store of the type exists: the module cannot be
/// unloaded under a snapshot. Dropping the registration unregisters the
/// name: no new store can get the type, while stores made before keep using
/// the table in its [`TypeStorage`].
///
/// A type is visible to dm-snapshot as soon as it is registered, and a
/// module whose init fails is freed whatever references it holds. A module
/// that registers a type under several names therefore registers the name
/// dm-snapshot looks up (it looks up "P" and "N" only) last, as the last
/// step of its init that can fail.
///
/// As every registration, one that is leaked (`core::mem::forget`) stays
/// registered after its module is unloaded.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::{ExceptionStore, Registration, TypeStorage};
///
/// // One type under two names, as the C persistent store has; the module
/// // keeps both in its state and drops them at exit.
/// struct Names<T: ExceptionStore> {
///     _long: Registration<T>,
///     _short: Registration<T>,
/// }
///
/// static LONG: TypeStorage = TypeStorage::new();
/// static SHORT: TypeStorage = TypeStorage::new();
///
/// fn register<T: ExceptionStore>(module: &'static ThisModule) -> Result<Names<T>> {
///     Ok(Names {
///         _long: Registration::new(&LONG, c"persistent", module)?,
///         _short: Registration::new(&SHORT, c"P", module)?,
///     })
/// }
/// ```
///
/// # Invariants
///
/// `storage.table` holds the table of `T`, is registered with dm-snapshot
/// (`dm_exception_store_type_register()`) until the drop unregisters it, and
/// `storage` is claimed by this registration.
pub struct Registration<T: ExceptionStore> {
    storage: &'static TypeStorage,
    _store: PhantomData<T>,
}

// SAFETY: Registering and unregistering may happen on any thread.
unsafe impl<T: ExceptionStore> Send for Registration<T> {}

// SAFETY: `&Registration` offers no operation.
unsafe impl<T: ExceptionStore> Sync for Registration<T> {}

impl<T: ExceptionStore> Registration<T> {
    /// Registers the type `T` as `name` for `module`, with its table in
    /// `storage`.
    ///
    /// # Errors
    ///
    /// `EBUSY` if a store type of that name is registered already (for
    /// instance dm-snapshot's own persistent store), or if `storage` was
    /// registered before.
    pub fn new(
        storage: &'static TypeStorage,
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> Result<Self> {
        if storage.claimed.xchg(true, Full) {
            return Err(EBUSY);
        }
        let table = storage.table.get();
        // SAFETY: The exchange above gave this call the storage: nothing
        // else reads or writes `table` (the `TypeStorage` invariants), and
        // it is valid for writes for as long as the module (a `static`).
        unsafe { table.write(Callbacks::<T>::type_table(name, module)) };
        // SAFETY: `table` is an initialised type table that lives as long as
        // the module, longer than any store of the type (which holds a
        // reference to the module); it is unregistered in the drop.
        let registered = to_result(unsafe { bindings::dm_exception_store_type_register(table) });
        if let Err(e) = registered {
            // INVARIANT: Registering failed, so dm-snapshot never saw the
            // table; the storage may be claimed again.
            storage.claimed.store(false, Release);
            return Err(e);
        }
        // INVARIANT: The table of `T` is registered, in the storage this
        // call claimed.
        Ok(Self {
            storage,
            _store: PhantomData,
        })
    }
}

impl<T: ExceptionStore> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the table is registered; it is
        // unregistered once, here. Stores made before keep reading it: it
        // stays in the storage, which is not written again (the storage
        // stays claimed).
        unsafe { bindings::dm_exception_store_type_unregister(self.storage.table.get()) };
    }
}
