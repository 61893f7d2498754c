// SPDX-License-Identifier: GPL-2.0

//! Workqueues owned by their user.
//!
//! [`kernel::workqueue`] gives access to the system workqueues and to work
//! items that live in reference-counted or boxed allocations. A driver that
//! must make forward progress under memory pressure (a block driver doing
//! metadata I/O, say) needs its own `WQ_MEM_RECLAIM` queue, destroyed with
//! it, and a way to run a piece of work there and wait for it without
//! allocating. This module provides both.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use core::{
    cell::UnsafeCell,
    marker::PhantomPinned,
    pin::pin,
    ptr::NonNull, //
};
use kernel::{
    bindings,
    error::{
        code::{
            EINVAL,
            ENOMEM, //
        },
        Result, //
    },
    ffi,
    prelude::*,
    str::CStr,
    sync::LockClassKey,
    types::Opaque, //
};

/// Where the work of a queue runs. A queue has exactly one placement: the
/// kernel warns about a queue with neither or both.
///
/// # Examples
///
/// ```
/// use crate::dedicated_workqueue::{DedicatedQueue, Placement};
///
/// let queue = DedicatedQueue::builder(Placement::Unbound).build(c"kexample_unbound", kernel::static_lock_class!())?;
/// assert_eq!(queue.run_sync(|| 1 + 1)?, 2);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placement {
    /// `WQ_PERCPU`: work runs on the CPU it was queued from.
    PerCpu,
    /// `WQ_UNBOUND`: work runs on any CPU.
    Unbound,
    /// `alloc_ordered_workqueue()`: unbound, and one work item at a time,
    /// in the order queued.
    Ordered,
}

impl Placement {
    const fn bits(self) -> u32 {
        match self {
            Placement::PerCpu => bindings::wq_flags_WQ_PERCPU,
            Placement::Unbound => bindings::wq_flags_WQ_UNBOUND,
            Placement::Ordered => bindings::wq_flags_WQ_UNBOUND | bindings::wq_flags___WQ_ORDERED,
        }
    }
}

/// The settings of a new [`DedicatedQueue`]; made by
/// [`DedicatedQueue::builder`], consumed by [`Builder::build`].
///
/// # Examples
///
/// ```
/// use crate::dedicated_workqueue::{DedicatedQueue, Placement};
///
/// // A per-CPU queue with a rescuer thread, for I/O that reclaim may wait on.
/// let queue = DedicatedQueue::builder(Placement::PerCpu)
///     .mem_reclaim()
///     .build(c"kexampled", kernel::static_lock_class!())?;
/// assert_eq!(queue.run_sync(|| 6 * 7)?, 42);
/// ```
///
/// # Invariants
///
/// `flags` holds no bits but `WQ_MEM_RECLAIM` and `WQ_HIGHPRI`: the
/// methods set no others, so [`Builder::build`] passes one placement (one
/// bit, or `WQ_UNBOUND | __WQ_ORDERED` for [`Placement::Ordered`]) and never
/// `WQ_BH`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Builder {
    placement: Placement,
    flags: u32,
    max_active: u16,
}

impl Builder {
    /// `WQ_MEM_RECLAIM`: the queue gets a rescuer thread, so its work runs
    /// even when no new worker can be allocated. Required for work that
    /// memory reclaim may wait on, such as I/O of a block device.
    #[must_use]
    pub const fn mem_reclaim(self) -> Self {
        Self {
            flags: self.flags | bindings::wq_flags_WQ_MEM_RECLAIM,
            ..self
        }
    }

    /// `WQ_HIGHPRI`: work runs on high-priority workers.
    #[must_use]
    pub const fn highpri(self) -> Self {
        Self {
            flags: self.flags | bindings::wq_flags_WQ_HIGHPRI,
            ..self
        }
    }

    /// The number of work items that may run at once per CPU (or in all, for
    /// an unbound queue). Without this call, or with 0, the kernel's default
    /// applies; the kernel clamps values above `WQ_MAX_ACTIVE` with a warning.
    /// An ordered queue runs one at a time whatever this says.
    #[must_use]
    pub const fn max_active(self, max_active: u16) -> Self {
        Self { max_active, ..self }
    }

    /// Allocates the workqueue, named `name` (`alloc_workqueue()`; the
    /// kernel keeps the first 31 bytes of a longer name, with a warning).
    ///
    /// The work that [`DedicatedQueue::run_sync`] queues is known to
    /// lockdep by `name` and `work_class`: pass
    /// `kernel::static_lock_class!()`, so that the queues made at one place
    /// share a class and those made elsewhere have their own. Give a key
    /// one name, as `kernel::new_work!` does: lockdep warns when it meets a
    /// key under a second name (`look_up_lock_class()`), so a helper that
    /// builds queues of several names from one `static_lock_class!()` is
    /// wrong; write the macro where the name is a literal.
    ///
    /// # Errors
    ///
    /// `ENOMEM` if the workqueue cannot be allocated.
    ///
    /// Context: may sleep.
    pub fn build(
        self,
        name: &'static CStr,
        work_class: Pin<&'static LockClassKey>,
    ) -> Result<DedicatedQueue> {
        let flags = self.placement.bits() | self.flags;
        // An ordered queue runs one item at a time (`alloc_ordered_workqueue()`).
        let max_active = match self.placement {
            Placement::Ordered => 1,
            _ => self.max_active,
        };
        // SAFETY: `name` is a NUL-terminated string, valid for the call; the
        // helper passes it as the only argument of a fixed `"%s"` format,
        // and `alloc_workqueue()` copies it (into the queue's name, cut at
        // `WQ_NAME_LEN`, and for lockdep), so it need not outlive the call.
        // `flags` is one placement (one bit, or `WQ_UNBOUND | __WQ_ORDERED`
        // with a `max_active` of 1, as `alloc_ordered_workqueue()` passes)
        // and, at most, `WQ_MEM_RECLAIM` and `WQ_HIGHPRI` (type invariant;
        // never `WQ_BH`). `max_active` is 0, for the default, or a value
        // the kernel clamps to its limit with a warning.
        let ptr =
            unsafe { bindings::alloc_workqueue(name.as_char_ptr(), flags, i32::from(max_active)) };
        let ptr = NonNull::new(ptr).ok_or(ENOMEM)?;
        // INVARIANT: `ptr` is a new workqueue, owned by the value returned.
        Ok(DedicatedQueue {
            ptr,
            name,
            work_class,
        })
    }
}

/// A workqueue allocated by [`Builder::build`] and destroyed on drop.
///
/// It hands out no [`kernel::workqueue::Queue`]: through one, delayed work
/// could be queued whose timer `destroy_workqueue()` does not wait for, and
/// that timer would then queue work on a freed workqueue. Work runs here
/// through [`DedicatedQueue::run_sync`], which waits for it, and as the
/// completions of asynchronous dm-io writes
/// ([`crate::device_mapper::io::IoScope`]), which the queue's owner waits
/// for before it drops the queue.
///
/// # Examples
///
/// ```
/// use crate::dedicated_workqueue::{DedicatedQueue, Placement};
///
/// let queue = DedicatedQueue::builder(Placement::PerCpu)
///     .mem_reclaim()
///     .max_active(1)
///     .build(c"kexample_sync", kernel::static_lock_class!())?;
/// // The closure may borrow from the caller's stack: `run_sync` waits for it.
/// let data = [1u32, 2, 3];
/// assert_eq!(queue.run_sync(|| data.iter().sum::<u32>())?, 6);
/// ```
///
/// # Invariants
///
/// `ptr` points to a workqueue returned by `alloc_workqueue()` that has not
/// been destroyed; only the drop of this value destroys it.
pub struct DedicatedQueue {
    ptr: NonNull<bindings::workqueue_struct>,
    /// The queue's name, also the lockdep name of the work `run_sync` queues.
    name: &'static CStr,
    /// The lockdep class of that work.
    work_class: Pin<&'static LockClassKey>,
}

// SAFETY: A workqueue may be used and destroyed from any thread.
unsafe impl Send for DedicatedQueue {}

// SAFETY: All operations on a workqueue through `&DedicatedQueue` are safe to
// call concurrently.
unsafe impl Sync for DedicatedQueue {}

impl DedicatedQueue {
    /// Starts the settings of a new queue whose work runs as `placement`
    /// says; [`Builder::build`] allocates it.
    pub const fn builder(placement: Placement) -> Builder {
        Builder {
            placement,
            flags: 0,
            max_active: 0,
        }
    }

    /// Runs `f` on this workqueue and waits until it has run, returning its
    /// result.
    ///
    /// The work item lives on the caller's stack: nothing is allocated, so
    /// this makes progress under memory pressure when the queue was made
    /// with [`Builder::mem_reclaim`]. A caller uses this to leave its own
    /// context, for instance to issue synchronous I/O from a thread that is
    /// not inside the block layer's `submit_bio_noacct()` recursion.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the work item finished without a result, which the
    /// workqueue guarantees cannot happen; it is an error rather than a
    /// panic only because kernel code must not panic.
    ///
    /// Context: may sleep. Must not be called from a work item running on
    /// this same queue (it would wait for itself).
    pub fn run_sync<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let item = pin!(OnStackWork::<F, T> {
            work: Opaque::uninit(),
            func: UnsafeCell::new(Some(f)),
            result: UnsafeCell::new(None),
            _pin: PhantomPinned,
        });
        // The work item is reached from a pointer to the whole item, so that
        // `run` may go back from it to the whole item (`container_of!`).
        let this = core::ptr::from_ref::<OnStackWork<F, T>>(&item);
        // SAFETY: `this` points to the live item; this only projects to a
        // field.
        let work = Opaque::cast_into(unsafe { &raw const (*this).work });

        // SAFETY: `work` points to the pinned, not yet initialised work item
        // on our stack; it is initialised here for on-stack use with a run
        // function that expects the containing `OnStackWork<F, T>`, and a
        // name and lock class key that live for ever, as lockdep keeps
        // pointers to both.
        unsafe {
            bindings::init_work_with_key(
                work,
                Some(OnStackWork::<F, T>::run),
                true,
                self.name.as_char_ptr(),
                self.work_class.as_ptr(),
            )
        };

        // SAFETY: `self.ptr` is a live workqueue (type invariant) and `work`
        // an initialised work item that is not queued yet. The item stays
        // valid until it has run: `flush_work` below waits for that before
        // this frame, which owns it, can be left.
        unsafe {
            bindings::queue_work_on(
                bindings::wq_misc_consts_WORK_CPU_UNBOUND as ffi::c_int,
                self.ptr.as_ptr(),
                work,
            )
        };

        // SAFETY: `work` was initialised and queued above. `flush_work`
        // returns once it has finished running.
        unsafe { bindings::flush_work(work) };

        #[cfg(CONFIG_DEBUG_OBJECTS_WORK)]
        // SAFETY: The work item was initialised on the stack and has
        // finished; it is not used again.
        unsafe {
            bindings::destroy_work_on_stack(work)
        };

        // SAFETY: The work item has finished running (`flush_work` above),
        // so nothing else accesses `result` any more.
        unsafe { (*item.result.get()).take() }.ok_or(EINVAL)
    }
}

impl DedicatedQueue {
    /// The workqueue, for queueing work items whose owner waits for them
    /// before the queue is dropped.
    pub(crate) fn as_raw(&self) -> *mut bindings::workqueue_struct {
        self.ptr.as_ptr()
    }
}

impl Drop for DedicatedQueue {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the workqueue is live and owned by
        // `self`; `destroy_workqueue` drains it first. Nothing queues work
        // on it meanwhile or afterwards: `run_sync` borrows `self`, and the
        // completions of asynchronous dm-io writes are queued only while
        // their `IoScope`, which owns this queue, waits for them to end
        // (`crate::device_mapper::io::IoScope`).
        unsafe { bindings::destroy_workqueue(self.ptr.as_ptr()) };
    }
}

/// A work item on the stack of [`DedicatedQueue::run_sync`]: the function to run
/// and the place for its result.
///
/// # Invariants
///
/// The work item queued is `work`, reached through a pointer to the whole
/// item, so `run` may use `container_of!` on it. `func` is taken and
/// `result` written only by `run`, while the work item runs; `run_sync`
/// reads `result` only after the work item has finished.
struct OnStackWork<F, T> {
    work: Opaque<bindings::work_struct>,
    func: UnsafeCell<Option<F>>,
    result: UnsafeCell<Option<T>>,
    _pin: PhantomPinned,
}

impl<F: FnOnce() -> T + Send, T: Send> OnStackWork<F, T> {
    /// The work function.
    ///
    /// # Safety
    ///
    /// `work` must be the `work` field of a live, pinned `OnStackWork<F, T>`
    /// whose `run_sync` caller is waiting for this work item.
    unsafe extern "C" fn run(work: *mut bindings::work_struct) {
        // SAFETY: `work` is the `work` field of a live `OnStackWork<F, T>`
        // (the function's safety requirements), reached through a pointer
        // to the whole item (type invariant), so the item's pointer lies in
        // the same allocation.
        let this = unsafe { kernel::container_of!(Opaque::cast_from(work).cast_mut(), Self, work) };
        // SAFETY: `this` is the live item, and only this function touches
        // `func` and `result` while the work item runs (type invariant).
        let func = unsafe { (*(*this).func.get()).take() };
        if let Some(func) = func {
            let result = func();
            // SAFETY: As above.
            unsafe { *(*this).result.get() = Some(result) };
        }
    }
}
