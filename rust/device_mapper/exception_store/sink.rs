// SPDX-License-Identifier: GPL-2.0

//! The sink that a store reports the exceptions it reads to.
//!
//! C header: [`drivers/md/dm-exception-store.h`](srctree/drivers/md/dm-exception-store.h)

use super::Chunk;
use core::marker::PhantomData;
use kernel::{
    bindings,
    error::{
        to_result,
        Result, //
    },
    ffi,
};

/// dm-snapshot's `dm_add_exception()` callback, as `read_metadata` gets it.
pub(super) type AddException =
    unsafe extern "C" fn(*mut ffi::c_void, bindings::chunk_t, bindings::chunk_t) -> ffi::c_int;

/// Where [`ExceptionStore::read_metadata`] reports the exceptions it finds
/// (dm-snapshot's `dm_add_exception()` callback).
///
/// It is neither `Send` nor `Sync` (raw pointers), and exists only as a
/// borrow during `read_metadata`: it cannot leave that call or its thread.
///
/// [`ExceptionStore::read_metadata`]: super::ExceptionStore::read_metadata
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
    callback: AddException,
    context: *mut ffi::c_void,
    _callback_lifetime: PhantomData<&'a ()>,
}

impl<'a> ExceptionSink<'a> {
    /// Returns the sink that calls `callback(context, old, new)`, for the
    /// store-type glue.
    ///
    /// # Safety
    ///
    /// `callback` must be safe to call with `context` any number of times,
    /// from process context on this thread, for `'a`.
    pub(super) unsafe fn from_raw(callback: AddException, context: *mut ffi::c_void) -> Self {
        // INVARIANT: The caller guarantees that the callback may be called
        // with `context` for `'a`.
        Self {
            callback,
            context,
            _callback_lifetime: PhantomData,
        }
    }

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
