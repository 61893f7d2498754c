// SPDX-License-Identifier: GPL-2.0

//! The store handle that the callbacks of an exception store get.
//!
//! C header: [`drivers/md/dm-exception-store.h`](srctree/drivers/md/dm-exception-store.h)

use super::{
    operations::Context,
    CHUNK_SIZE_LIMIT_SECTORS, //
};
use crate::{
    block_device::BlockDevice,
    device_mapper::io::IoLease, //
};
use kernel::{
    bindings,
    error::{
        code::EINVAL,
        Result, //
    },
    sync::atomic::{
        Atomic,
        Relaxed, //
    },
    types::Opaque,
};

/// The store a callback is called for (`struct dm_exception_store`).
///
/// dm-snapshot writes some of the store's fields itself, outside the
/// store's callbacks: `chunk_size` (set to 0 in the snapshot constructor
/// when the metadata will be handed over, without its mask and shift), and
/// `snap` and `userspace_supports_overflow` (when `snapshot_resume()` hands
/// the store over to a new table, under both snapshots' `snap->lock` for
/// writing). The accessors read each of them once per call, with
/// `READ_ONCE()` semantics, and do not assume them to be consistent with
/// each other, whichever lock their caller holds.
///
/// Requires the series' dm-snapshot patch "dm snapshot: hold the snapshot
/// lock for the store's table status" (`patches/`), with which
/// [`ExceptionStore::status`] runs under `snap->lock` for reading.
///
/// [`ExceptionStore::status`]: super::ExceptionStore::status
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
    pub(super) unsafe fn from_raw<'a>(ptr: *mut bindings::dm_exception_store) -> &'a Self {
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
    ///
    /// [`ExceptionStore::status`]: super::ExceptionStore::status
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

    /// A lease for asynchronous writes to the COW device
    /// ([`IoClient::write_async`]): the store's destructor waits for every
    /// lease, and so for every write in flight and its completion, before
    /// dm-snapshot closes the device.
    ///
    /// [`IoClient::write_async`]: crate::device_mapper::io::IoClient::write_async
    ///
    /// # Errors
    ///
    /// `EINVAL` in the store's constructor, before the store has its scope.
    pub fn io_lease(&self) -> Result<IoLease> {
        // SAFETY: The store is live (type invariant); `context` is written
        // by `ctr` before any callback but the constructor and by `dtr`
        // after the last one, so no write races with this read.
        let context = unsafe { (*self.raw()).context }.cast::<Context>();
        if context.is_null() {
            return Err(EINVAL);
        }
        // SAFETY: A non-NULL `context` is the `Context` that `ctr` made,
        // live until `dtr`, which dm-snapshot does not call while a
        // callback (holding this `&Store`) runs. Callbacks run on several
        // threads at once; the scope's `lease` is safe to call from any
        // (its shared state is `Sync`).
        Ok(unsafe { (*context).scope.lease() })
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
/// [`ExceptionStore::read_metadata`]: super::ExceptionStore::read_metadata
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

impl<'a> StoreSetup<'a> {
    /// Returns the setup of `store`, for the store-type glue.
    ///
    /// # Safety
    ///
    /// For `'a`, dm-snapshot must be running the store's `ctr` or
    /// `read_metadata` in the snapshot's constructor, so that the type
    /// invariants hold.
    pub(super) unsafe fn new(store: &'a Store) -> Self {
        // INVARIANT: The caller guarantees that the snapshot's constructor
        // is in `ctr` or `read_metadata`, the phase the invariants describe.
        Self { store }
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
