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
    mem::ManuallyDrop, //
};
use kernel::{
    bindings,
    error::{
        code::EINVAL,
        from_result,
        to_result,
        Error,
        Result,
        VTABLE_DEFAULT_ERROR, //
    },
    ffi,
    prelude::*,
    str::CStr,
    types::{
        ForeignOwnable,
        Opaque, //
    },
    ThisModule, //
};

/// A chunk number (`chunk_t`): chunk `n` covers sectors
/// `n * chunk_size .. (n + 1) * chunk_size` of a device.
pub type Chunk = u64;

/// The largest chunk size a store may use, in sectors (`INT_MAX >> SECTOR_SHIFT`,
/// as `dm_exception_store_set_chunk_size()` allows).
pub const MAX_CHUNK_SECTORS: u32 = (i32::MAX as u32) >> 9;

type Borrowed<'a, T> = <<T as ExceptionStore>::Data as ForeignOwnable>::Borrowed<'a>;

/// An exception: chunk `old_chunk` of the origin is kept in chunk
/// `new_chunk` of the COW device (`struct dm_exception`, less its hash links).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Exception {
    /// The chunk of the origin.
    pub old_chunk: Chunk,
    /// Where its old data lives on the COW device.
    pub new_chunk: Chunk,
}

/// What [`ExceptionStore::read_metadata`] found on the COW device.
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
/// # Invariants
///
/// `self.0` is a live `struct dm_exception_store` whose `snap` is a live
/// snapshot, for the lifetime of every `&Store`. Its chunk size fields are
/// written only through [`StoreSetup`], while dm-snapshot calls nothing else
/// on the store.
#[repr(transparent)]
pub struct Store(Opaque<bindings::dm_exception_store>);

// SAFETY: dm-snapshot calls a store's callbacks from several threads; the
// accessors below only read fields that are not written concurrently.
unsafe impl Sync for Store {}

impl Store {
    /// # Safety
    ///
    /// `ptr` must point to a live `struct dm_exception_store` with a live
    /// `snap`, valid for `'a`, whose chunk size is not written during `'a`
    /// other than through a [`StoreSetup`] of it.
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
    /// not read).
    pub fn chunk_size(&self) -> u32 {
        // SAFETY: The store is live (type invariant) and its chunk size is
        // not written concurrently.
        unsafe { (*self.raw()).chunk_size }
    }

    /// `log2` of the chunk size (`store->chunk_shift`), 0 while the chunk
    /// size is 0.
    pub fn chunk_shift(&self) -> u32 {
        // SAFETY: As in `chunk_size`.
        unsafe { (*self.raw()).chunk_shift }
    }

    /// The chunk size minus one (`store->chunk_mask`).
    pub fn chunk_mask(&self) -> u32 {
        // SAFETY: As in `chunk_size`.
        unsafe { (*self.raw()).chunk_mask }
    }

    /// Whether the table asked for overflow to be reported rather than
    /// invalidating the snapshot (`store->userspace_supports_overflow`,
    /// the `O` of `PO`).
    pub fn userspace_supports_overflow(&self) -> bool {
        // SAFETY: The store is live (type invariant); dm-snapshot writes
        // this field only while handing the store over, when no callback
        // runs.
        unsafe { (*self.raw()).userspace_supports_overflow }
    }

    /// The COW device, where the store keeps its data (`dm_snap_cow()`).
    pub fn cow(&self) -> &BlockDevice {
        // SAFETY: The store and its snapshot are live (type invariant); the
        // snapshot holds its COW `dm_dev` open while it lives.
        unsafe { BlockDevice::from_raw((*bindings::dm_snap_cow((*self.raw()).snap)).bdev) }
    }

    /// The origin device (`dm_snap_origin()`).
    pub fn origin(&self) -> &BlockDevice {
        // SAFETY: As in `cow`, for the origin `dm_dev`.
        unsafe { BlockDevice::from_raw((*bindings::dm_snap_origin((*self.raw()).snap)).bdev) }
    }
}

/// A [`Store`] in a phase where dm-snapshot calls nothing else on it (its
/// constructor and [`ExceptionStore::read_metadata`]), so its settings can be
/// changed.
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
    /// [`MAX_CHUNK_SECTORS`].
    pub fn set_chunk_size(&mut self, sectors: u32) -> Result {
        if !sectors.is_power_of_two() || sectors > MAX_CHUNK_SECTORS {
            return Err(EINVAL);
        }
        let raw = self.store.raw();
        // SAFETY: The store is live, and in this phase nothing else reads or
        // writes it (the `StoreSetup` invariant).
        unsafe {
            (*raw).chunk_size = sectors;
            (*raw).chunk_mask = sectors - 1;
            (*raw).chunk_shift = sectors.trailing_zeros();
        }
        Ok(())
    }

    /// Records whether the table asked for overflow to be reported
    /// (`PO`) rather than invalidating the snapshot.
    pub fn set_userspace_supports_overflow(&mut self, supported: bool) {
        // SAFETY: As in `set_chunk_size`.
        unsafe { (*self.store.raw()).userspace_supports_overflow = supported };
    }
}

/// Where [`ExceptionStore::read_metadata`] reports the exceptions it finds
/// (dm-snapshot's `dm_add_exception()` callback).
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
        // SAFETY: dm-snapshot passed this callback and context to
        // `read_metadata`, which has not returned yet (`'a`).
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
    ///
    /// # Safety
    ///
    /// `callback` must be safe to call once with `context` from process
    /// context on any thread, at any time until it is called.
    pub unsafe fn from_raw(
        callback: unsafe extern "C" fn(*mut ffi::c_void, ffi::c_int),
        context: *mut ffi::c_void,
    ) -> Self {
        // INVARIANT: the callback has not been called yet.
        Self { callback, context }
    }

    /// Completes the commit: `success` tells dm-snapshot whether the
    /// exception is on disk; if not, it invalidates the snapshot.
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
pub struct StatusWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> StatusWriter<'a> {
    /// Returns a writer to `buf`, emptied (a NUL at its start).
    pub fn new(buf: &'a mut [u8]) -> Self {
        if let Some(first) = buf.first_mut() {
            *first = 0;
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
        let end = self.len + n;
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..end), s.as_bytes().get(..n)) {
            dst.copy_from_slice(src);
            self.len = end;
        }
        if let Some(nul) = self.buf.get_mut(self.len) {
            *nul = 0;
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
/// - [`usage`](ExceptionStore::usage) and `status` under the snapshot's
///   lock, process context.
/// - [`drop_snapshot`](ExceptionStore::drop_snapshot) when the snapshot is
///   invalidated, under the snapshot's lock, possibly while a commit runs.
/// - [`prepare_merge`](ExceptionStore::prepare_merge) and
///   [`commit_merge`](ExceptionStore::commit_merge) from the merge worker of
///   a `snapshot-merge` target; a type provides both or neither.
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

    /// Writes the store's part of the status line (`status`).
    ///
    /// Context: process.
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
            let mut setup = StoreSetup { store };
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
        // this callback writes it while it runs.
        let buf = unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen) };
        let mut out = StatusWriter::new(buf);
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

/// The registration of an [`ExceptionStore`] type under `N` names, for
/// example "persistent" and its short name "P".
///
/// The type's `module` is the registering module, so dm-snapshot holds a
/// reference to it while a store of the type exists: the module cannot be
/// unloaded under a snapshot. Dropping the registration unregisters every
/// name.
///
/// # Invariants
///
/// Every entry of `types` is registered with dm-snapshot
/// (`dm_exception_store_type_register()`) until the drop unregisters it,
/// and stays pinned meanwhile (dm-snapshot links it into its list).
#[pin_data(PinnedDrop)]
pub struct Registration<T: ExceptionStore, const N: usize> {
    #[pin]
    types: [Opaque<bindings::dm_exception_store_type>; N],
    _store: PhantomData<T>,
}

// SAFETY: Registering and unregistering may happen on any thread.
unsafe impl<T: ExceptionStore, const N: usize> Send for Registration<T, N> {}

// SAFETY: `&Registration` offers no operation.
unsafe impl<T: ExceptionStore, const N: usize> Sync for Registration<T, N> {}

impl<T: ExceptionStore, const N: usize> Registration<T, N> {
    /// Registers the type under each of `names`, for `module`.
    ///
    /// # Errors
    ///
    /// `EBUSY` if a store type of one of the names is registered already
    /// (for instance dm-snapshot's own persistent store); the names
    /// registered before it are unregistered again.
    pub fn new(
        names: [&'static CStr; N],
        module: &'static ThisModule,
    ) -> impl PinInit<Self, Error> {
        let init = move |slot: *mut Self| {
            // SAFETY: `slot` is valid for writes (the contract of
            // `pin_init_from_closure`); this only computes a field address.
            let types = unsafe { core::ptr::addr_of_mut!((*slot).types) };
            let types = types.cast::<Opaque<bindings::dm_exception_store_type>>();
            for (i, name) in names.iter().enumerate() {
                // SAFETY: `i < N`, so the entry lies within the array.
                let entry = Opaque::cast_into(unsafe { types.add(i) });
                // SAFETY: `entry` is valid for writes and not registered.
                unsafe { entry.write(Callbacks::<T>::type_table(name, module)) };
                // SAFETY: `entry` is an initialised type table in pinned
                // memory, which stays until it is unregistered (on error
                // below, or in the drop).
                let registered =
                    to_result(unsafe { bindings::dm_exception_store_type_register(entry) });
                if let Err(e) = registered {
                    for j in 0..i {
                        // SAFETY: Entries `0..i` were registered above.
                        let earlier = Opaque::cast_into(unsafe { types.add(j) });
                        // SAFETY: `earlier` is registered, and nothing can
                        // use it yet: the registration is not finished.
                        unsafe { bindings::dm_exception_store_type_unregister(earlier) };
                    }
                    return Err(e);
                }
            }
            // SAFETY: `slot` is valid for writes; this is the last field.
            // INVARIANT: every entry is registered, in pinned memory.
            unsafe { core::ptr::addr_of_mut!((*slot)._store).write(PhantomData) };
            Ok(())
        };
        // SAFETY: On success `init` initialised every field of the slot;
        // on error it left nothing registered that points into the slot.
        unsafe { pin_init::pin_init_from_closure(init) }
    }
}

#[pinned_drop]
impl<T: ExceptionStore, const N: usize> PinnedDrop for Registration<T, N> {
    fn drop(self: Pin<&mut Self>) {
        for entry in self.types.iter() {
            // SAFETY: By the type invariant every entry is registered; it is
            // unregistered once, here. dm-snapshot holds a reference to our
            // module while a store of the type exists, so none exists now.
            unsafe { bindings::dm_exception_store_type_unregister(entry.get()) };
        }
    }
}
