// SPDX-License-Identifier: GPL-2.0

//! The callbacks of an exception store type, and their C trampolines.
//!
//! C header: [`drivers/md/dm-exception-store.h`](srctree/drivers/md/dm-exception-store.h)

use super::{
    sink::AddException,
    Chunk,
    CommitCompletion,
    Exception,
    ExceptionSink,
    MergeRun,
    Metadata,
    StatusType,
    StatusWriter,
    Store,
    StoreSetup,
    Usage, //
};
use crate::device_mapper::io::IoScope;
use core::{
    marker::PhantomData,
    mem::MaybeUninit, //
};
use kernel::{
    bindings,
    error::{
        code::EINVAL,
        from_result,
        Result,
        VTABLE_DEFAULT_ERROR, //
    },
    ffi,
    prelude::*,
    str::CStr,
    types::ForeignOwnable,
    ThisModule, //
};

type Borrowed<'a, T> = <<T as ExceptionStore>::Data as ForeignOwnable>::Borrowed<'a>;

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
pub(super) struct Callbacks<T: ExceptionStore>(PhantomData<T>);

/// What `store->context` points to, from `ctr` to `dtr`: the scope of the
/// store's asynchronous metadata I/O and the type's data.
///
/// # Invariants
///
/// `data` holds the type's data from `into_foreign`, until `dtr` takes it
/// back. `scope` is for the COW device of the snapshot the store belongs
/// to. A handover (`__handover_exceptions()`) moves the store, context and
/// all, only to a snapshot whose COW device is the same block device
/// (`bdev_equal()`), and each snapshot puts its COW device only after it
/// destroyed the store it holds; so the device is open until `dtr`, which
/// drops the scope, waiting for every write of it, before it returns.
pub(super) struct Context {
    /// Reached by [`Store::io_lease`].
    pub(super) scope: IoScope,
    data: *mut ffi::c_void,
}

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
        // the `Context` that `ctr` made, whose `data` is from
        // `into_foreign` (type invariant), not yet taken back by `dtr`,
        // which dm-snapshot does not call while other callbacks run.
        unsafe {
            let context = (*store).context.cast::<Context>();
            (T::Data::borrow((*context).data), Store::from_raw(store))
        }
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
            // SAFETY: dm-snapshot runs nothing else on a store while it
            // constructs it, and calls `ctr` in the snapshot's constructor.
            let mut setup = unsafe { StoreSetup::new(store_ref) };
            let options = if options.is_null() {
                None
            } else {
                // SAFETY: `options` is a NUL-terminated string valid for
                // this call.
                Some(unsafe { CStr::from_char_ptr(options) })
            };
            // SAFETY: dm-snapshot opened the COW device before it made the
            // store (`snapshot_ctr()`), and puts it only after `dtr` ran,
            // which drops the scope (type invariant of `Context`, which
            // owns the scope from here).
            let scope =
                unsafe { IoScope::new(setup.cow(), c"ksnaphd_io", kernel::static_lock_class!()) }?;
            let data = T::new(&mut setup, options)?;
            let mut context = KBox::new(
                Context {
                    scope,
                    data: core::ptr::null_mut(),
                },
                GFP_KERNEL,
            )?;
            // INVARIANT: the data, until `dtr` takes it back.
            context.data = data.into_foreign();
            // SAFETY: `store` is live; `dtr` takes the context back.
            unsafe { (*store).context = KBox::into_raw(context).cast() };
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
    ///
    /// Asynchronous writes of the store may still be in flight, their
    /// completions holding references to the data: the scope is dropped
    /// first, which waits for them, so the data is dropped here, last.
    unsafe extern "C" fn dtr(store: *mut bindings::dm_exception_store) {
        // SAFETY: `context` holds the box `ctr` made; this is the last
        // callback, so no borrow of it is alive.
        let context = unsafe { KBox::from_raw((*store).context.cast::<Context>()) };
        let Context { scope, data } = KBox::into_inner(context);
        // Waits for the writes in flight and their completions.
        drop(scope);
        // SAFETY: `data` holds the data from `into_foreign` (type
        // invariant), taken back once, here.
        drop(unsafe { T::Data::from_foreign(data) });
        // SAFETY: `store` is live; the context is gone.
        unsafe { (*store).context = core::ptr::null_mut() };
    }

    /// # Safety
    ///
    /// dm-snapshot calls this in the snapshot constructor after `ctr`,
    /// while nothing else uses the store; `callback` and `callback_context`
    /// are valid for the call.
    unsafe extern "C" fn read_metadata(
        store: *mut bindings::dm_exception_store,
        callback: Option<AddException>,
        callback_context: *mut ffi::c_void,
    ) -> ffi::c_int {
        from_result(|| {
            let callback = callback.ok_or(EINVAL)?;
            // SAFETY: The function's safety requirements.
            let (data, store) = unsafe { Self::get(store) };
            // SAFETY: dm-snapshot reads the metadata in the snapshot's
            // constructor, with nothing else running on the store.
            let mut setup = unsafe { StoreSetup::new(store) };
            // SAFETY: dm-snapshot's callback and context are valid for
            // this call, on this thread, and the sink does not outlive it.
            let mut sink = unsafe { ExceptionSink::from_raw(callback, callback_context) };
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
    pub(super) fn type_table(
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
