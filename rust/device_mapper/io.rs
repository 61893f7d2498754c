// SPDX-License-Identifier: GPL-2.0

//! Block I/O through dm-io.
//!
//! dm-io reads and writes regions of block devices from and to memory of
//! several kinds. An [`IoClient`] owns the `struct dm_io_client` (its bio
//! set and page pool). Its synchronous calls name a [`Region`] of a device
//! and a buffer; the kind of memory (vmalloc or kmalloc) is decided by the
//! buffer's type, never by the caller. Its asynchronous writes
//! ([`IoClient::write_async`]) own what they use until their completion
//! ran: see [`IoScope`].
//!
//! C header: [`include/linux/dm-io.h`](srctree/include/linux/dm-io.h)

mod asynchronous;

pub use asynchronous::{
    IoDone,
    IoLease,
    IoRequest,
    IoScope,
    Submitted, //
};

use crate::block_device::BlockDevice;
use core::{
    mem::MaybeUninit,
    ptr::NonNull, //
};
use kernel::{
    alloc::{
        flags::{
            __GFP_ZERO, //
            GFP_KERNEL,
        },
        KVec,
        VVec, //
    },
    bindings,
    block::{
        SECTOR_SHIFT,
        SECTOR_SIZE, //
    },
    error::{
        code::EINVAL,
        from_err_ptr,
        to_result,
        Result, //
    },
    ffi,
    page::{
        Page,
        PAGE_SIZE, //
    }, //
};

/// `IOPRIO_DEFAULT`: `IOPRIO_PRIO_VALUE(IOPRIO_CLASS_NONE, 0)`, a macro that
/// bindgen does not translate.
const IOPRIO_DEFAULT: ffi::c_ushort = 0;

/// Operation flags of a request (`blk_opf_t` flag bits).
///
/// # Examples
///
/// ```
/// use crate::device_mapper::io::OpFlags;
///
/// // A commit: every earlier write flushed, and this one durable on return.
/// let commit = OpFlags::PREFLUSH | OpFlags::FUA | OpFlags::SYNC;
/// assert_ne!(commit, OpFlags::NONE);
/// assert_eq!(OpFlags::default(), OpFlags::NONE);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct OpFlags(bindings::blk_opf_t);

impl OpFlags {
    /// No flags.
    pub const NONE: OpFlags = OpFlags(0);
    /// `REQ_SYNC`: the caller waits for the request.
    pub const SYNC: OpFlags = OpFlags(1 << bindings::req_flag_bits___REQ_SYNC);
    /// `REQ_FUA`: the data is on stable storage when the request completes.
    pub const FUA: OpFlags = OpFlags(1 << bindings::req_flag_bits___REQ_FUA);
    /// `REQ_PREFLUSH`: the device's volatile cache is flushed before the
    /// request, so every write completed before it is on stable storage too.
    pub const PREFLUSH: OpFlags = OpFlags(1 << bindings::req_flag_bits___REQ_PREFLUSH);

    /// Returns the raw flag bits.
    const fn bits(self) -> bindings::blk_opf_t {
        self.0
    }
}

impl core::ops::BitOr for OpFlags {
    type Output = OpFlags;

    fn bitor(self, rhs: OpFlags) -> OpFlags {
        OpFlags(self.0 | rhs.0)
    }
}

/// A range of sectors of a block device (`struct dm_io_region`).
///
/// # Examples
///
/// ```
/// use crate::{block_device::BlockDeviceFile, device_mapper::io::Region};
///
/// # let dev = BlockDeviceFile::open(1, 0, false)?; // brd's /dev/ram0
/// let header = Region::new(&dev, 0, 8)?;
/// assert_eq!(header.len(), 4096);
/// // Empty, or past the end of the device: refused.
/// assert_eq!(Region::new(&dev, 0, 0).err(), Some(EINVAL));
/// assert_eq!(Region::new(&dev, dev.nr_sectors(), 1).err(), Some(EINVAL));
/// ```
///
/// # Invariants
///
/// The range lies within the device, `count` is not zero, and `count`
/// sectors fit in a `usize` number of bytes.
#[derive(Clone, Copy)]
pub struct Region<'a> {
    bdev: &'a BlockDevice,
    sector: u64,
    count: u64,
}

impl<'a> Region<'a> {
    /// Returns the region of `count` sectors of `bdev` starting at `sector`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `count` is zero or the region does not lie within the
    /// device.
    pub fn new(bdev: &'a BlockDevice, sector: u64, count: u64) -> Result<Self> {
        let end = sector.checked_add(count).ok_or(EINVAL)?;
        let bytes = count.checked_mul(u64::from(SECTOR_SIZE)).ok_or(EINVAL)?;
        if count == 0 || end > bdev.nr_sectors() || usize::try_from(bytes).is_err() {
            return Err(EINVAL);
        }
        // INVARIANT: checked just above.
        Ok(Self {
            bdev,
            sector,
            count,
        })
    }

    /// The first sector of the region.
    pub fn sector(&self) -> u64 {
        self.sector
    }

    /// The number of sectors in the region.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The length of the region in bytes.
    pub fn len(&self) -> usize {
        // The type invariant says this fits in a `usize`.
        (self.count << SECTOR_SHIFT) as usize
    }

    /// Whether the region is empty: never, by the type invariant.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn as_raw(&self) -> bindings::dm_io_region {
        bindings::dm_io_region {
            bdev: self.bdev.as_raw(),
            sector: self.sector,
            count: self.count,
        }
    }
}

mod private {
    use kernel::bindings;

    /// The part of [`super::IoMemory`] that speaks dm-io's C types: sealed,
    /// so it is not part of the public API.
    pub trait Sealed {
        /// Describes the bytes from `offset` on to dm-io, for dm-io to read.
        ///
        /// # Safety
        ///
        /// `offset` must not be beyond the end of the buffer.
        unsafe fn dm_io_memory(&self, offset: usize) -> bindings::dm_io_memory;

        /// Describes the bytes from `offset` on to dm-io, for dm-io to write.
        ///
        /// # Safety
        ///
        /// `offset` must not be beyond the end of the buffer.
        unsafe fn dm_io_memory_mut(&mut self, offset: usize) -> bindings::dm_io_memory;
    }
}

/// Memory that dm-io can transfer to or from.
///
/// Implemented for [`VVec<u8>`] (vmalloc memory, `DM_IO_VMA`) and
/// [`KVec<u8>`] (kmalloc memory, `DM_IO_KMEM`); sealed, because dm-io must be
/// told the right kind for each address.
///
/// # Examples
///
/// ```
/// use crate::{
///     block_device::BlockDeviceFile,
///     device_mapper::io::{IoClient, OpFlags, Region},
/// };
///
/// # let dev = BlockDeviceFile::open(1, 0, true)?; // brd's /dev/ram0
/// let client = IoClient::new()?;
/// let region = Region::new(&dev, 64, 1)?;
/// // vmalloc memory (a store's metadata area) ...
/// let area = VVec::from_elem(0x5au8, 512, GFP_KERNEL)?;
/// client.write(&region, &area, 0, OpFlags::NONE)?;
/// // ... and kmalloc memory (a header block) both do.
/// let mut header = KVec::from_elem(0u8, 512, GFP_KERNEL)?;
/// client.read(&region, &mut header, 0)?;
/// assert!(header.iter().all(|&b| b == 0x5a));
/// ```
pub trait IoMemory: private::Sealed {
    /// The buffer's bytes.
    fn bytes(&self) -> &[u8];
}

/// Describes memory at `ptr` of kind `type_` to dm-io. Both kinds of
/// memory we use are given by address (the `vma` and `addr` members of the
/// union are the same pointer).
fn dm_io_memory(type_: bindings::dm_io_mem_type, ptr: *mut u8) -> bindings::dm_io_memory {
    bindings::dm_io_memory {
        type_,
        offset: 0,
        ptr: bindings::dm_io_memory__bindgen_ty_1 {
            addr: ptr.cast::<ffi::c_void>(),
        },
    }
}

impl IoMemory for VVec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl private::Sealed for VVec<u8> {
    unsafe fn dm_io_memory(&self, offset: usize) -> bindings::dm_io_memory {
        // SAFETY: The caller guarantees `offset <= self.len()`, so the
        // result is within the allocation or one past its end.
        let ptr = unsafe { self.as_ptr().add(offset) };
        dm_io_memory(bindings::dm_io_mem_type_DM_IO_VMA, ptr.cast_mut())
    }

    unsafe fn dm_io_memory_mut(&mut self, offset: usize) -> bindings::dm_io_memory {
        // SAFETY: The caller guarantees `offset <= self.len()`, so the
        // result is within the allocation or one past its end.
        let ptr = unsafe { self.as_mut_ptr().add(offset) };
        dm_io_memory(bindings::dm_io_mem_type_DM_IO_VMA, ptr)
    }
}

impl IoMemory for KVec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl private::Sealed for KVec<u8> {
    unsafe fn dm_io_memory(&self, offset: usize) -> bindings::dm_io_memory {
        // SAFETY: The caller guarantees `offset <= self.len()`, so the
        // result is within the allocation or one past its end.
        let ptr = unsafe { self.as_ptr().add(offset) };
        dm_io_memory(bindings::dm_io_mem_type_DM_IO_KMEM, ptr.cast_mut())
    }

    unsafe fn dm_io_memory_mut(&mut self, offset: usize) -> bindings::dm_io_memory {
        // SAFETY: The caller guarantees `offset <= self.len()`, so the
        // result is within the allocation or one past its end.
        let ptr = unsafe { self.as_mut_ptr().add(offset) };
        dm_io_memory(bindings::dm_io_mem_type_DM_IO_KMEM, ptr)
    }
}

/// One page of memory owned by its holder, for a block that dm-io reads or
/// writes whole: a header block, say. Starts zeroed.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::io::IoPage;
/// use kernel::page::PAGE_SIZE;
///
/// let mut page = IoPage::new()?;
/// page.write(8, b"header")?;
/// let mut back = [0u8; 10];
/// page.read(4, &mut back)?;
/// assert_eq!(&back, b"\0\0\0\0header");
/// // Past the page's end: refused.
/// assert_eq!(page.write(PAGE_SIZE - 1, b"ab").err(), Some(EINVAL));
/// ```
///
/// # Invariants
///
/// `page` is owned by this value and reached only through it: written
/// through `&mut self` (by [`IoPage::write`] and [`IoPage::clear`]), read
/// through `&self` (by [`IoPage::read`], or by dm-io in
/// [`IoClient::write_page_then_zeros`]). No Rust reference
/// to the page's bytes is ever made, so no slice a caller holds can
/// overlap them. `Send` and `Sync` (from [`Page`]) are sound because of
/// this: shared access only reads.
pub struct IoPage {
    page: Page,
}

impl IoPage {
    /// Allocates a zeroed page.
    ///
    /// # Errors
    ///
    /// `ENOMEM` if no page can be allocated.
    ///
    /// Context: may sleep.
    pub fn new() -> Result<Self> {
        // INVARIANT: a new page, owned by the returned value only.
        Ok(Self {
            page: Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?,
        })
    }

    /// Copies `src` into the page from byte `offset` on.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `src` does not fit in the page from `offset`.
    pub fn write(&mut self, offset: usize, src: &[u8]) -> Result {
        // SAFETY: `src` is valid for reading `src.len()` bytes, and does not
        // overlap the page: no Rust reference to the page's bytes exists
        // (type invariant). The page is reached only through `self`,
        // borrowed mutably here, so nothing reads or writes it concurrently
        // (dm-io included: it reaches the page only during calls that
        // borrow `self`).
        unsafe { self.page.write_raw(src.as_ptr(), offset, src.len()) }
    }

    /// Zeroes the whole page.
    pub fn clear(&mut self) {
        // SAFETY: As in `write`: `self` is borrowed mutably and is the only
        // way to the page. The range is the whole page, so the bounds
        // check cannot fail.
        let _ = unsafe { self.page.fill_zero_raw(0, PAGE_SIZE) };
    }

    /// Copies the page's bytes from `offset` on into `dst`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `dst` is longer than the page from `offset`.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result {
        // SAFETY: `dst` is valid for writing `dst.len()` bytes and does not
        // overlap the page, to whose bytes no Rust reference exists (type
        // invariant). The page is written only through `&mut self` (type
        // invariant), which cannot coexist with this shared borrow.
        unsafe { self.page.read_raw(dst.as_mut_ptr(), offset, dst.len()) }
    }
}

/// A page of zeros that dm-io writes as often as a region needs: a region
/// of any length zeroed with one page of memory (C: the zero `page_list` of
/// dm-kcopyd).
///
/// # Invariants
///
/// Every byte of `page` is zero: it is allocated zeroed, owned by this
/// value, and only ever handed to dm-io as the source of writes.
pub struct ZeroPage {
    page: Page,
}

impl ZeroPage {
    /// Allocates the page.
    ///
    /// # Errors
    ///
    /// `ENOMEM` if no page can be allocated.
    ///
    /// Context: may sleep.
    pub fn new() -> Result<Self> {
        // INVARIANT: `__GFP_ZERO` zeroes the page; nothing writes it after.
        Ok(Self {
            page: Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?,
        })
    }
}

/// A dm-io client (`struct dm_io_client`): the bio set and page pool that
/// its I/O is allocated from.
///
/// # Examples
///
/// ```
/// use crate::{
///     block_device::BlockDeviceFile,
///     device_mapper::io::{IoClient, OpFlags, Region},
/// };
///
/// # let dev = BlockDeviceFile::open(1, 0, true)?; // brd's /dev/ram0
/// let client = IoClient::new()?;
/// let region = Region::new(&dev, 8, 8)?;
/// let data = VVec::from_elem(7u8, 4096, GFP_KERNEL)?;
/// // Durable on return, with every write completed before it.
/// client.write(&region, &data, 0, OpFlags::PREFLUSH | OpFlags::FUA)?;
/// let mut back = VVec::from_elem(0u8, 4096, GFP_KERNEL)?;
/// client.read(&region, &mut back, 0)?;
/// assert!(back[..] == data[..]);
/// // A buffer too short for the region is refused before any I/O.
/// let mut short = VVec::from_elem(0u8, 512, GFP_KERNEL)?;
/// assert_eq!(client.read(&region, &mut short, 0).err(), Some(EINVAL));
/// ```
///
/// # Invariants
///
/// `ptr` is a client returned by `dm_io_client_create()` and not yet
/// destroyed; only the drop of this value destroys it.
pub struct IoClient {
    ptr: NonNull<bindings::dm_io_client>,
}

// SAFETY: A dm-io client may be used and destroyed from any thread.
unsafe impl Send for IoClient {}

// SAFETY: dm-io allocates from the client's mempools, which are safe to use
// concurrently.
unsafe impl Sync for IoClient {}

impl IoClient {
    /// Creates a client (`dm_io_client_create()`).
    ///
    /// # Errors
    ///
    /// `ENOMEM` if its pools cannot be allocated.
    ///
    /// Context: may sleep.
    pub fn new() -> Result<Self> {
        // SAFETY: `dm_io_client_create` has no preconditions.
        let ptr = from_err_ptr(unsafe { bindings::dm_io_client_create() })?;
        // INVARIANT: `ptr` is a new client owned by the returned value.
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(EINVAL)?,
        })
    }

    /// Reads `region` into `buf` from byte `offset` on, and waits for the
    /// read to finish.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the region does not fit in `buf` from `offset`; the
    /// errno of the failed I/O otherwise (`EIO` mostly).
    ///
    /// Context: may sleep.
    pub fn read<M: IoMemory>(&self, region: &Region<'_>, buf: &mut M, offset: usize) -> Result {
        Self::check_fits(region, buf.bytes().len(), offset)?;
        // SAFETY: The region fits in `buf` from `offset` (checked above).
        let mem = unsafe { buf.dm_io_memory_mut(offset) };
        // SAFETY: `mem` describes `region.len()` bytes of `buf`, which is
        // borrowed mutably: nothing else reads or writes it while dm-io
        // writes into it.
        unsafe { self.submit(region, mem, bindings::req_op_REQ_OP_READ) }
    }

    /// Writes `region` from `buf` (from byte `offset` on) with `flags`, and
    /// waits for the write to finish.
    ///
    /// With [`OpFlags::PREFLUSH`] and [`OpFlags::FUA`], the data is on stable
    /// storage when this returns `Ok`, and so is every write that completed
    /// before it.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the region does not fit in `buf` from `offset`; the
    /// errno of the failed I/O otherwise (`EIO` mostly).
    ///
    /// Context: may sleep.
    pub fn write<M: IoMemory>(
        &self,
        region: &Region<'_>,
        buf: &M,
        offset: usize,
        flags: OpFlags,
    ) -> Result {
        Self::check_fits(region, buf.bytes().len(), offset)?;
        // SAFETY: The region fits in `buf` from `offset` (checked above).
        let mem = unsafe { buf.dm_io_memory(offset) };
        // SAFETY: `mem` describes `region.len()` bytes of `buf`, which is
        // borrowed shared: nothing writes to it while dm-io reads it.
        unsafe { self.submit(region, mem, bindings::req_op_REQ_OP_WRITE | flags.bits()) }
    }

    /// Writes `region` with `flags` from `head` (its first `PAGE_SIZE`
    /// bytes, or fewer if the region is shorter) followed by zeros for the
    /// rest of the region, or with zeros only when `head` is `None`, and
    /// waits for the write to finish. One request, however long the region:
    /// the zeros come from the one page of `zeros`, written as many times as
    /// needed.
    ///
    /// # Errors
    ///
    /// The errno of the failed I/O (`EIO` mostly).
    ///
    /// Context: may sleep.
    pub fn write_page_then_zeros(
        &self,
        region: &Region<'_>,
        head: Option<&IoPage>,
        zeros: &ZeroPage,
        flags: OpFlags,
    ) -> Result {
        // The zero page's node follows itself: dm-io takes the page again
        // for each page of the region (as dm-kcopyd's zero page list does).
        // Written once through the one pointer that dm-io then uses.
        let mut tail = MaybeUninit::<bindings::page_list>::uninit();
        let tail_ptr = tail.as_mut_ptr();
        // SAFETY: `tail_ptr` points to `tail`, valid for a write of a
        // `page_list`; nothing else refers to it yet.
        unsafe {
            tail_ptr.write(bindings::page_list {
                next: tail_ptr,
                page: zeros.page.as_ptr(),
            })
        };
        let mut first = head.map(|h| bindings::page_list {
            next: tail_ptr,
            page: h.page.as_ptr(),
        });
        let list = match first.as_mut() {
            Some(node) => core::ptr::from_mut(node),
            None => tail_ptr,
        };
        // SAFETY: The nodes live on this stack frame until `submit`
        // returns, which waits for the I/O, and are neither moved nor
        // touched meanwhile (dm-io only reads them); the list starts at
        // offset 0 and every node's `next` is a node of the list (the last
        // one itself), so dm-io finds a valid page for each page of a region
        // of any length. The pages are only read by the write, and nothing
        // writes them meanwhile: `head` is borrowed shared and an `IoPage`
        // is written only through `&mut` (type invariant); the zero page is
        // never written (type invariant of `ZeroPage`).
        unsafe {
            self.submit(
                region,
                Self::page_list(list),
                bindings::req_op_REQ_OP_WRITE | flags.bits(),
            )
        }
    }

    /// Describes the page list starting at `node` to dm-io.
    fn page_list(node: *mut bindings::page_list) -> bindings::dm_io_memory {
        bindings::dm_io_memory {
            type_: bindings::dm_io_mem_type_DM_IO_PAGE_LIST,
            offset: 0,
            ptr: bindings::dm_io_memory__bindgen_ty_1 { pl: node },
        }
    }

    fn check_fits(region: &Region<'_>, buf_len: usize, offset: usize) -> Result {
        match offset.checked_add(region.len()) {
            Some(end) if end <= buf_len => Ok(()),
            _ => Err(EINVAL),
        }
    }

    /// Issues a synchronous dm-io request.
    ///
    /// # Safety
    ///
    /// `mem` must describe valid memory of its kind for `region.len()`
    /// bytes from its offset (for a page list: every node dm-io visits for
    /// that many bytes is valid and names a valid page), which no one
    /// accesses in a way that conflicts with the operation until this
    /// returns.
    unsafe fn submit(
        &self,
        region: &Region<'_>,
        mem: bindings::dm_io_memory,
        opf: bindings::blk_opf_t,
    ) -> Result {
        let mut raw_region = region.as_raw();
        let mut req = bindings::dm_io_request {
            bi_opf: opf,
            mem,
            // No notify function: dm-io waits for the I/O.
            notify: bindings::dm_io_notify {
                fn_: None,
                context: core::ptr::null_mut(),
            },
            client: self.ptr.as_ptr(),
        };
        // SAFETY: `req` and `raw_region` are valid for the call; the client
        // is live (type invariant); the region's device is open (it is
        // borrowed by `region`); the memory is valid for the region's length
        // and not accessed concurrently (the caller's guarantee). Without a
        // notify function, `dm_io` waits for the I/O before it returns.
        to_result(unsafe {
            bindings::dm_io(
                &mut req,
                1,
                &mut raw_region,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                IOPRIO_DEFAULT,
            )
        })
    }
}

impl Drop for IoClient {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the client is live and owned by
        // `self`. No I/O of it is in flight: synchronous I/O borrows `self`,
        // and an asynchronous write holds an `Arc` of the client until its
        // completion ran, after dm-io was done with the client.
        unsafe { bindings::dm_io_client_destroy(self.ptr.as_ptr()) };
    }
}
