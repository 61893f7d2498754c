// SPDX-License-Identifier: GPL-2.0

//! Asynchronous writes through dm-io, completed in process context on an
//! ordered `WQ_MEM_RECLAIM` workqueue.
//!
//! An asynchronous write outlives the call that issues it: the bio reads
//! the buffer, allocates from the client's bio set and goes to the device
//! after the call returned. So everything it uses is owned, never
//! borrowed, until its completion has run:
//!
//! - the buffer lives in an [`IoRequest`], which the write takes by value
//!   and hands back only to the completion ([`IoDone::io_done`]);
//! - the request holds an `Arc<IoClient>` while in flight;
//! - the device, and the queue the completion runs on, belong to an
//!   [`IoScope`], which does not end before every [`IoLease`] of it is
//!   dropped; a write in flight holds one until its completion returned.
//!
//! No safe caller can break this: forgetting a request or a lease leaks
//! it, and a leaked lease makes its scope wait for ever at its end, which
//! is a hang, never a use after free.
//!
//! C header: [`include/linux/dm-io.h`](srctree/include/linux/dm-io.h)

use super::{
    IoClient,
    IoMemory,
    OpFlags,
    Region,
    IOPRIO_DEFAULT, //
};
use crate::{
    block_device::BlockDevice,
    dedicated_workqueue::{
        DedicatedQueue,
        Placement, //
    },
};
use core::{
    ops::{
        Deref,
        DerefMut, //
    },
    ptr::NonNull, //
};
use kernel::{
    alloc::Flags,
    bindings,
    error::{
        code::{
            EINVAL,
            EIO, //
        },
        Error,
        Result, //
    },
    ffi,
    prelude::*,
    str::CStr,
    sync::{
        atomic::{
            Atomic,
            Full,
            Relaxed, //
        },
        Arc,
        Completion,
        LockClassKey,
        Refcount, //
    },
    workqueue::{
        impl_has_work,
        new_work,
        RawWorkItem,
        Work,
        WorkItem, //
    },
};

/// What an [`IoScope`] owns: the device its writes go to, the ordered
/// queue their completions run on, and the count of its leases.
///
/// # Invariants
///
/// - `bdev` is open until the scope ends, and the scope ends only after
///   `leases` reached zero (see [`IoScope`]).
/// - `leases` counts the scope's own reference (until it ends) and every
///   live [`IoLease`]. When the drop of a lease brings it to zero, that
///   drop completes `idle`; when the scope's own drop does, no lease is
///   left and nothing completes it.
#[pin_data]
struct ScopeInner {
    leases: Refcount,
    #[pin]
    idle: Completion,
    bdev: NonNull<bindings::block_device>,
    queue: DedicatedQueue,
}

// SAFETY: A `ScopeInner` may be made, used and dropped on any thread:
// `leases` is a `refcount_t` and `idle` a `struct completion`, both made
// for concurrent use; `bdev` is only read after construction, as the
// address of a device any thread may submit I/O to; `queue` is `Send` and
// `Sync`.
unsafe impl Send for ScopeInner {}

// SAFETY: Shared access reads `bdev` and `queue` (the queue is `Sync`) and
// counts and completes through `leases` and `idle`, which are atomic or
// locked; nothing is written through `&ScopeInner` otherwise.
unsafe impl Sync for ScopeInner {}

/// The lifetime of asynchronous I/O: a block device kept open and an
/// ordered `WQ_MEM_RECLAIM` workqueue kept alive until every write issued
/// through one of its [`IoLease`]s completed and its completion returned.
///
/// Made by [`IoScope::with`], which ends the scope (waiting for the last
/// lease) before it returns, or by the exception-store glue, which ends a
/// store's scope in the store's destructor, before dm-snapshot closes the
/// COW device.
///
/// # Examples
///
/// ```
/// use crate::{
///     block_device::BlockDeviceFile,
///     device_mapper::io::{IoClient, IoDone, IoLease, IoRequest, IoScope, OpFlags, Submitted},
/// };
/// use kernel::sync::{Arc, Completion};
///
/// // Counts the writes that completed; the test waits for the last one.
/// #[pin_data]
/// struct Done {
///     #[pin]
///     all: Completion,
///     ok: kernel::sync::atomic::Atomic<u32>,
/// }
///
/// impl IoDone<VVec<u8>> for Done {
///     fn io_done(
///         this: Arc<Self>,
///         request: IoRequest<VVec<u8>, Self>,
///         _lease: &IoLease,
///         result: Result,
///     ) {
///         // The buffer is back: safe code had no way to it meanwhile.
///         assert!(request.iter().all(|&b| b == 0x3c));
///         if result.is_ok() {
///             this.ok.fetch_add(1, kernel::sync::atomic::Relaxed);
///         }
///         this.all.complete_all();
///     }
/// }
///
/// # let dev = BlockDeviceFile::open(1, 0, true)?; // brd's /dev/ram0
/// let client = Arc::new(IoClient::new()?, GFP_KERNEL)?;
/// let done = Arc::pin_init(
///     pin_init!(Done { all <- Completion::new(), ok: kernel::sync::atomic::Atomic::new(0) }),
///     GFP_KERNEL,
/// )?;
/// let request = IoRequest::new(VVec::from_elem(0x3cu8, 4096, GFP_KERNEL)?, GFP_KERNEL)?;
/// IoScope::with(&dev, c"kexample_io", kernel::static_lock_class!(), |scope| {
///     let lease = scope.lease();
///     match client.write_async(&lease, request, 8, 8, OpFlags::FUA, done.clone()) {
///         Err((e, _request)) => return Err(e),
///         // brd completes the write before the call returns: the caller
///         // has the outcome, as if the completion had run.
///         Ok(Submitted::Completed(request, result)) => {
///             Done::io_done(done.clone(), request, &lease, result)
///         }
///         Ok(Submitted::InFlight) => {}
///     }
///     // The lease, the client and `done` may all go: the write holds its own.
///     drop(lease);
///     done.all.wait_for_completion();
///     Ok(())
/// })??;
/// assert_eq!(done.ok.load(kernel::sync::atomic::Relaxed), 1);
/// ```
///
/// # Invariants
///
/// `inner`'s count holds one reference for this value until its drop, and
/// its device is open until then.
pub struct IoScope {
    inner: Pin<KBox<ScopeInner>>,
}

impl IoScope {
    /// Starts a scope for writes to `bdev`, their completions running on a
    /// new ordered `WQ_MEM_RECLAIM` queue named `name` (lockdep class
    /// `work_class`: see [`crate::dedicated_workqueue::Builder::build`]).
    ///
    /// # Errors
    ///
    /// `ENOMEM` if the scope or its queue cannot be allocated.
    ///
    /// # Safety
    ///
    /// `bdev` must stay open until the returned scope is dropped, and the
    /// scope must be dropped (not forgotten) before it is closed.
    ///
    /// Context: may sleep.
    pub(crate) unsafe fn new(
        bdev: &BlockDevice,
        name: &'static CStr,
        work_class: Pin<&'static LockClassKey>,
    ) -> Result<Self> {
        let queue = DedicatedQueue::builder(Placement::Ordered)
            .mem_reclaim()
            .build(name, work_class)?;
        let bdev = NonNull::new(bdev.as_raw()).ok_or(EINVAL)?;
        // INVARIANT: the caller keeps `bdev` open until the scope is
        // dropped, and `drop` waits for the count, which starts at the
        // scope's own reference.
        let inner = KBox::pin_init(
            pin_init!(ScopeInner {
                leases: Refcount::new(1),
                idle <- Completion::new(),
                bdev,
                queue,
            }),
            GFP_KERNEL,
        )?;
        Ok(Self { inner })
    }

    /// Runs `f` with a scope for writes to `bdev` (see [`IoScope::new`]),
    /// then waits until every write issued in it completed and its
    /// completion returned.
    ///
    /// # Errors
    ///
    /// `ENOMEM` if the scope cannot be made; `f` does not run then.
    ///
    /// Context: may sleep.
    pub fn with<R>(
        bdev: &BlockDevice,
        name: &'static CStr,
        work_class: Pin<&'static LockClassKey>,
        f: impl FnOnce(&IoScope) -> R,
    ) -> Result<R> {
        // SAFETY: `bdev` is borrowed for this call, and the scope is owned
        // by this frame and dropped before it returns.
        let scope = unsafe { Self::new(bdev, name, work_class) }?;
        let r = f(&scope);
        drop(scope);
        Ok(r)
    }

    /// A lease on this scope, for the writes issued with it.
    pub fn lease(&self) -> IoLease {
        self.inner.leases.inc();
        // INVARIANT: counted just above; the scope is live.
        IoLease {
            scope: NonNull::from(&*self.inner),
        }
    }
}

impl Drop for IoScope {
    fn drop(&mut self) {
        if !self.inner.leases.dec_and_test() {
            // A lease is live: its drop completes `idle` once it is the
            // last (type invariant of `ScopeInner`).
            self.inner.idle.wait_for_completion();
        }
        // Dropping the queue next drains it: the last completion may still
        // be returning from its work function.
    }
}

/// A counted reference to an [`IoScope`]: while one lives, the scope's
/// device is open and its queue alive.
///
/// # Invariants
///
/// `scope` points to a live `ScopeInner` whose `leases` counts this value.
pub struct IoLease {
    scope: NonNull<ScopeInner>,
}

// SAFETY: A lease only reads an immutable device pointer and the queue
// pointer, and counts with an atomic reference count; any thread may do so
// and drop it.
unsafe impl Send for IoLease {}

// SAFETY: As for `Send`: `&IoLease` gives access to nothing that is not
// safe to share.
unsafe impl Sync for IoLease {}

impl IoLease {
    fn inner(&self) -> &ScopeInner {
        // SAFETY: The scope is live while this lease is (type invariant).
        unsafe { self.scope.as_ref() }
    }

    /// The scope's device.
    pub fn device(&self) -> &BlockDevice {
        // SAFETY: The device is open while the scope is (type invariant of
        // `ScopeInner`), which is at least while this lease lives.
        unsafe { BlockDevice::from_raw(self.inner().bdev.as_ptr()) }
    }
}

impl Clone for IoLease {
    fn clone(&self) -> Self {
        self.inner().leases.inc();
        // INVARIANT: counted just above.
        Self { scope: self.scope }
    }
}

impl Drop for IoLease {
    fn drop(&mut self) {
        let inner = self.inner();
        if inner.leases.dec_and_test() {
            // The scope dropped its own reference first and waits for
            // this. It frees `inner` once the completion is done, and
            // `complete_all` releases the completion's lock before a waiter
            // can return, so nothing touches `inner` after this call.
            inner.idle.complete_all();
        }
    }
}

/// What runs once an asynchronous write of an [`IoRequest`] completed.
///
/// It runs on the scope's queue, one completion at a time: it must not wait
/// for anything that waits for the queue, nor run work on it synchronously.
pub trait IoDone<M: IoMemory>: Send + Sync + Sized + 'static {
    /// Called in process context on the scope's queue, in completion order,
    /// with the request back, the lease the write held (to issue the next
    /// one with) and the write's outcome (`EIO` if any part of it failed or
    /// the device does not support it).
    fn io_done(this: Arc<Self>, request: IoRequest<M, Self>, lease: &IoLease, result: Result);
}

/// What a write in flight holds, and its completion gets.
struct Flight<D> {
    done: Arc<D>,
    client: Arc<IoClient>,
    lease: IoLease,
}

/// The memory of an [`IoRequest`] (not nameable outside this module): the
/// buffer, the work item its
/// completion is queued with, and what the write in flight holds.
///
/// # Invariants
///
/// - `flight` is `Some` exactly from a successful submission until the
///   work item runs, and only while the box is owned by dm-io or the
///   queue (no `IoRequest` holds it).
/// - `error` is written by the submission, then only by `notify`, and read
///   only after it (by the work item, or by the submitter for a write that
///   completed inline): the regions that failed or that the device does not
///   support, as bits.
/// - `state` is `SUBMITTING` from the start of a submission until `notify`
///   or the submitter, once `dm_io()` returned, moves it on: the one whose
///   `cmpxchg` succeeds decides who owns the box from then on (see
///   `IoClient::write_async`).
#[pin_data]
pub(super) struct RequestInner<M, D> {
    #[pin]
    work: Work<RequestInner<M, D>>,
    buf: M,
    flight: Option<Flight<D>>,
    error: ffi::c_ulong,
    state: Atomic<u32>,
}

/// [`RequestInner::state`]: `dm_io()` has not returned yet.
const SUBMITTING: u32 = 0;
/// `dm_io()` returned before the write completed: `notify` owns the box and
/// queues the completion.
const IN_FLIGHT: u32 = 1;
/// The write completed before `dm_io()` returned: the submitter owns the
/// box and hands the outcome back to its caller.
const DONE_INLINE: u32 = 2;

/// The outcome of a completed write from the error bits `notify` stored
/// in [`RequestInner::error`], which it clears for the next write.
fn take_result(error: &mut ffi::c_ulong) -> Result {
    if core::mem::take(error) == 0 {
        Ok(())
    } else {
        Err(EIO)
    }
}

/// What [`IoClient::write_async`] did with a request.
pub enum Submitted<M, D> {
    /// The write is in flight: [`IoDone::io_done`] gets the request back.
    InFlight,
    /// The write completed before the call returned (a device that
    /// completes I/O in the submitter's context, such as brd): the request
    /// is back here with the write's outcome, and `io_done` is not called.
    Completed(IoRequest<M, D>, Result),
}

impl_has_work! {
    impl{M, D} HasWork<Self> for RequestInner<M, D> { self.work }
}

impl<M: IoMemory + Send + 'static, D: IoDone<M>> WorkItem for RequestInner<M, D> {
    type Pointer = Pin<KBox<Self>>;

    fn run(mut this: Pin<KBox<Self>>) {
        let fields = this.as_mut().project();
        let Some(flight) = fields.flight.take() else {
            // Not reached: only a submitted request is queued.
            return;
        };
        let result = take_result(fields.error);
        let Flight {
            done,
            client,
            lease,
        } = flight;
        D::io_done(done, IoRequest(this), &lease, result);
        drop(client);
        // Last: once the lease is dropped the scope may end.
        drop(lease);
    }
}

/// A buffer for asynchronous writes, with the work item its completion
/// runs as, allocated once and reused: issuing a write allocates nothing
/// that can fail (dm-io's own allocations come from the client's mempools).
///
/// While the write is in flight the request belongs to it, so the buffer
/// cannot be read, written or freed by anyone else; it comes back to
/// [`IoDone::io_done`]. The compiler enforces it (in-tree, rustdoc checks
/// that this does not build; the out-of-tree KUnit conversion of the
/// examples skips it):
///
/// ```compile_fail
/// use crate::device_mapper::io::{IoClient, IoDone, IoLease, IoRequest, OpFlags};
/// use kernel::sync::Arc;
///
/// fn reuse<D: IoDone<VVec<u8>>>(
///     client: &Arc<IoClient>,
///     lease: &IoLease,
///     mut request: IoRequest<VVec<u8>, D>,
///     done: Arc<D>,
/// ) {
///     let _ = client.write_async(lease, request, 0, 1, OpFlags::NONE, done);
///     request[0] = 1; // error[E0382]: borrow of moved value: `request`
/// }
/// ```
pub struct IoRequest<M, D>(Pin<KBox<RequestInner<M, D>>>);

impl<M: IoMemory + Send + 'static, D: IoDone<M>> IoRequest<M, D> {
    /// Makes a request around `buf`.
    ///
    /// # Errors
    ///
    /// `ENOMEM` if the request cannot be allocated.
    pub fn new(buf: M, flags: Flags) -> Result<Self> {
        let inner = KBox::pin_init(
            pin_init!(RequestInner {
                work <- new_work!("dm_io_async_done"),
                buf,
                flight: None,
                error: 0,
                state: Atomic::new(SUBMITTING),
            }),
            flags,
        )?;
        Ok(Self(inner))
    }

    /// The dm-io notify function of a request.
    ///
    /// # Safety
    ///
    /// `context` must be the pointer [`IoClient::write_async`] got from
    /// `KBox::into_raw` for a request it submitted, and this must be the
    /// one call dm-io makes for that submission.
    unsafe extern "C" fn notify(
        error: ffi::c_ulong,
        unsupported: ffi::c_ulong,
        context: *mut ffi::c_void,
    ) {
        let ptr = context.cast::<RequestInner<M, D>>();
        // SAFETY: `ptr` is the request's box, live until the `cmpxchg`
        // below decides who owns it (the function's safety requirement and
        // the type invariant); until then no one else writes `error`.
        unsafe { (&raw mut (*ptr).error).write(error | unsupported) };
        // SAFETY: As above; `state` is an atomic, shared with the submitter.
        let state = unsafe { &(*ptr).state };
        if state.cmpxchg(SUBMITTING, DONE_INLINE, Full).is_ok() {
            // Still inside `dm_io()`: the submitter takes the request back
            // when it returns. Nothing here touches the box again.
            return;
        }
        // SAFETY: The submitter moved `state` on after `dm_io()` returned,
        // so the box is ours (type invariant); it was pinned before.
        let mut boxed = unsafe { Pin::new_unchecked(KBox::from_raw(ptr)) };
        let fields = boxed.as_mut().project();
        let Some(flight) = fields.flight.as_ref() else {
            // Not reached: a submitted request holds its flight. Leaked
            // rather than dropped: `M`'s destructor need not be fit for
            // interrupt context.
            let _ = KBox::into_raw(
                // SAFETY: Nothing moves the request out of its box.
                unsafe { Pin::into_inner_unchecked(boxed) },
            );
            return;
        };
        // The queue is reached through a raw pointer, not a reference: once
        // the work item is queued it may run at once, drop the last lease,
        // and let the scope end and free `ScopeInner` while `queue_work_on`
        // is still returning.
        let wq = flight.lease.inner().queue.as_raw();
        // SAFETY: `wq` is a live workqueue when `queue_work_on` is entered:
        // the lease in the request keeps the scope, which owns it, alive
        // until the work item has run, and the item is not queued before
        // this call. Inside, `queue_work_on()` runs with interrupts off
        // (`local_irq_save()`), which is an RCU read-side section, and the
        // scope's end frees the workqueue only through RCU
        // (`destroy_workqueue()`: `call_rcu()` of the queue, `kfree_rcu()`
        // of its pool workqueues), so the queue outlives the call even if
        // the work item ran and the scope ended meanwhile. The work item
        // was initialised by `new` with this type's run function, is never
        // disabled (nothing here calls `disable_work()`), and is not queued:
        // the request belonged to this submission, so `queue_work_on()`
        // returns true. `M: Send` and `D: Send + Sync` let the work run on
        // the queue's worker, and both are `'static`.
        unsafe {
            boxed.__enqueue(|work| {
                bindings::queue_work_on(
                    bindings::wq_misc_consts_WORK_CPU_UNBOUND as ffi::c_int,
                    wq,
                    work,
                )
            })
        }
    }
}

impl<M, D> Deref for IoRequest<M, D> {
    type Target = M;

    fn deref(&self) -> &M {
        &self.0.buf
    }
}

impl<M, D> DerefMut for IoRequest<M, D> {
    fn deref_mut(&mut self) -> &mut M {
        self.0.as_mut().project().buf
    }
}

impl IoClient {
    /// Writes `count` sectors from `sector` of `lease`'s device with
    /// `flags`, from the start of `request`'s buffer, without
    /// waiting. Once the write completed, `D::io_done(done, request, result)`
    /// runs on the scope's queue; or, when the write completed before this
    /// returns, the request comes back at once ([`Submitted::Completed`]),
    /// which saves a round trip through the queue.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the region is empty, lies outside the device, or does
    /// not fit in the buffer; dm-io's error if it refused the
    /// request. The request is handed back then, and `done` is not called.
    ///
    /// Context: process context, may sleep (dm-io allocates from the
    /// client's mempools with `GFP_NOIO`).
    #[allow(clippy::type_complexity)]
    pub fn write_async<M: IoMemory + Send + 'static, D: IoDone<M>>(
        self: &Arc<Self>,
        lease: &IoLease,
        mut request: IoRequest<M, D>,
        sector: u64,
        count: u64,
        flags: OpFlags,
        done: Arc<D>,
    ) -> Result<Submitted<M, D>, (Error, IoRequest<M, D>)> {
        let (region, len) = match Region::new(lease.device(), sector, count) {
            Ok(r) => (r.as_raw(), r.len()),
            Err(e) => return Err((e, request)),
        };
        if len > request.bytes().len() {
            return Err((EINVAL, request));
        }
        let fields = request.0.as_mut().project();
        fields.state.store(SUBMITTING, Relaxed);
        *fields.error = 0;
        *fields.flight = Some(Flight {
            done,
            client: self.clone(),
            lease: lease.clone(),
        });
        // SAFETY: Offset 0 is within the buffer.
        let mem = unsafe { super::private::Sealed::dm_io_memory(&*fields.buf, 0) };
        // SAFETY: The box is not moved out of: ownership of it passes to
        // dm-io until `notify` rebuilds the pinned box.
        let boxed = unsafe { Pin::into_inner_unchecked(request.0) };
        let ptr = KBox::into_raw(boxed);
        let mut raw_region = region;
        let mut req = bindings::dm_io_request {
            bi_opf: bindings::req_op_REQ_OP_WRITE | flags.bits(),
            mem,
            notify: bindings::dm_io_notify {
                fn_: Some(IoRequest::<M, D>::notify),
                context: ptr.cast::<ffi::c_void>(),
            },
            client: self.ptr.as_ptr(),
        };
        // SAFETY: `req` and `raw_region` are valid for the call. The client
        // is live, and stays so until `notify`'s work item ran: the request
        // holds an `Arc` of it, and dm-io is done with the client before it
        // calls `notify` (`complete_io()` frees its `struct io` first). The
        // device is open until the lease the request holds is dropped,
        // after the work item ran. `mem` describes the buffer from offset
        // 0 (vmalloc or kmalloc memory as its sealed type says), at least
        // `len` bytes long (checked above), owned by the request, which
        // dm-io owns until `notify`: no one else reads, writes or frees it
        // meanwhile. With a notify function, `dm_io()` returns 0 and calls
        // `notify` exactly once (from `dispatch_io()`'s last `dec_count()`,
        // possibly before returning), or returns an error from its checks
        // (`num_regions`, `dp_init()`) without calling it.
        let r = unsafe {
            bindings::dm_io(
                &mut req,
                1,
                &mut raw_region,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                IOPRIO_DEFAULT,
            )
        };
        if r == 0 {
            // SAFETY: The box is live: `notify` does not free it, and gives
            // it up at its `cmpxchg` only if `state` is still SUBMITTING.
            let state = unsafe { &(*ptr).state };
            if state.cmpxchg(SUBMITTING, IN_FLIGHT, Full).is_ok() {
                // `notify` owns it from here.
                return Ok(Submitted::InFlight);
            }
        }
        // SAFETY: dm-io refused the request without calling `notify`, or
        // `notify` ran before `dm_io()` returned and left the box to us
        // (`state` is DONE_INLINE); either way it is ours again, and it was
        // pinned before.
        let mut boxed = unsafe { Pin::new_unchecked(KBox::from_raw(ptr)) };
        let fields = boxed.as_mut().project();
        let _ = fields.flight.take();
        if r != 0 {
            return Err((Error::from_errno(r), IoRequest(boxed)));
        }
        let result = take_result(fields.error);
        Ok(Submitted::Completed(IoRequest(boxed), result))
    }
}
