// SPDX-License-Identifier: GPL-2.0

//! The completion of a commit, which dm-snapshot waits for.
//!
//! C header: [`drivers/md/dm-exception-store.h`](srctree/drivers/md/dm-exception-store.h)

use core::mem::ManuallyDrop;
use kernel::ffi;

/// The completion of one [`ExceptionStore::commit_exception`]: dm-snapshot
/// waits for it to finish the pending exception (and its bios).
///
/// It must be completed exactly once; dropping it completes it with failure,
/// so a store that loses one fails the exception rather than hanging I/O.
/// Completing it may re-enter the store on the same thread
/// ([`ExceptionStore::drop_snapshot`], [`ExceptionStore::prepare_exception`])
/// and may sleep: complete it without holding any of the store's locks.
///
/// [`ExceptionStore::commit_exception`]: super::ExceptionStore::commit_exception
/// [`ExceptionStore::drop_snapshot`]: super::ExceptionStore::drop_snapshot
/// [`ExceptionStore::prepare_exception`]: super::ExceptionStore::prepare_exception
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
    /// destructor go on, but the store's data stays valid until the
    /// `commit_exception` call that was given this completion returns.
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
