// SPDX-License-Identifier: GPL-2.0

//! The registration of an exception store type with dm-snapshot.
//!
//! C header: [`drivers/md/dm-exception-store.h`](srctree/drivers/md/dm-exception-store.h)

use super::{
    operations::Callbacks,
    ExceptionStore, //
};
use core::marker::PhantomData;
use kernel::{
    bindings,
    error::{
        code::EBUSY,
        to_result,
        Result, //
    },
    str::CStr,
    sync::atomic::{
        Atomic,
        Full,
        Release, //
    },
    types::Opaque,
    ThisModule, //
};

/// The home of one registered exception store type: dm-snapshot's type
/// table (`struct dm_exception_store_type`), in a `static` of the module.
///
/// Every store of the type reads the table (`store->type`) until after its
/// last callback, and holds a reference to the table's module, not to a
/// [`Registration`]: the table outlives its registration, so it lives as
/// long as the module and is registered at most once in the module's life,
/// never to be written again.
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
/// store is ("persistent" and "P"), takes two registrations.
///
/// While a store of the type exists, dm-snapshot holds a reference to the
/// registering module, which cannot be unloaded under a snapshot. Dropping
/// the registration unregisters the name; stores made before keep using the
/// table in its [`TypeStorage`]. One that is leaked (`core::mem::forget`)
/// stays registered after its module is unloaded.
///
/// A type is visible to dm-snapshot as soon as it is registered, and a
/// module whose init fails is freed whatever references it holds: register
/// the name dm-snapshot looks up ("P" or "N") last, as the last step of the
/// module's init that can fail.
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
