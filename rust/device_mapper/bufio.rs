// SPDX-License-Identifier: GPL-2.0

//! Buffered block reads through dm-bufio.
//!
//! dm-bufio caches fixed-size blocks of a block device. A [`BufioClient`]
//! owns a `struct dm_bufio_client`; [`BufioClient::read`] returns a
//! [`Buffer`] guard that gives the block's bytes and releases the block when
//! dropped. The guard
//! borrows the client mutably, so a holder has at most one buffer at a time
//! (dm-bufio's rule against deadlocking on its own reserve).
//!
//! C header: [`include/linux/dm-bufio.h`](srctree/include/linux/dm-bufio.h)

use crate::block_device::BlockDevice;
use core::{
    marker::PhantomData,
    ptr::NonNull, //
};
use kernel::{
    bindings,
    block::SECTOR_SIZE,
    error::{
        code::EINVAL,
        from_err_ptr,
        Result, //
    }, //
};

/// A dm-bufio client for one block device and block size.
///
/// # Examples
///
/// ```
/// use crate::{block_device::BlockDeviceFile, device_mapper::bufio::BufioClient};
///
/// # let dev = BlockDeviceFile::open(1, 0, false)?; // brd's /dev/ram0
/// let mut client = BufioClient::new(&dev, 4096)?;
/// // Start reading blocks 0 to 7, so that the reads below wait less.
/// client.prefetch(0, 8);
/// for block in 0..8 {
///     assert_eq!(client.read(block)?.len(), 4096);
/// }
/// // Drop a cached block: its next read goes to the device.
/// client.forget(3);
/// ```
///
/// # Invariants
///
/// `ptr` is a client returned by `dm_bufio_client_create()` and not yet
/// destroyed; only the drop of this value destroys it. The block device
/// stays open while the client exists (`'a`). `block_size` is the client's
/// block size in bytes.
pub struct BufioClient<'a> {
    ptr: NonNull<bindings::dm_bufio_client>,
    block_size: usize,
    _bdev: PhantomData<&'a BlockDevice>,
}

// SAFETY: A dm-bufio client may be used and destroyed from any thread.
unsafe impl Send for BufioClient<'_> {}

// SAFETY: The methods that take `&self` (device size, prefetch, forget)
// take the client's lock in dm-bufio or only read what does not change;
// those that hand out buffers or store settings without the lock
// (`set_minimum_buffers`) take `&mut self`.
unsafe impl Sync for BufioClient<'_> {}

/// The largest block size a [`BufioClient`] accepts: `KMALLOC_MAX_SIZE`.
///
/// dm-bufio allocates larger blocks with `__vmalloc()`, and its
/// non-blocking attempts pass `__GFP_NOMEMALLOC`, which vmalloc does not
/// support: Linux 7.3 warns ("Unexpected gfp ... Fix your code!") on the
/// first such read or prefetch. Read larger blocks with dm-io instead.
pub const MAX_BLOCK_SIZE: usize = bindings::KMALLOC_MAX_SIZE as usize;

impl<'a> BufioClient<'a> {
    /// Creates a client for `bdev` with blocks of `block_size` bytes
    /// (`dm_bufio_client_create()`), reserving one buffer.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `block_size` is not a power of two of at least one
    /// sector, or is larger than [`MAX_BLOCK_SIZE`]; `ENOMEM` if the client
    /// cannot be allocated.
    ///
    /// Context: may sleep.
    pub fn new(bdev: &'a BlockDevice, block_size: usize) -> Result<Self> {
        if !block_size.is_power_of_two()
            || !(SECTOR_SIZE as usize..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(EINVAL);
        }
        let raw_size = u32::try_from(block_size).map_err(|_| EINVAL)?;
        // SAFETY: `bdev` is open for `'a`, which the client does not
        // outlive; the block size was checked above; no aux data, no
        // callbacks, no flags.
        let ptr = from_err_ptr(unsafe {
            bindings::dm_bufio_client_create(bdev.as_raw(), raw_size, 1, 0, None, None, 0)
        })?;
        // INVARIANT: `ptr` is a new client owned by the returned value.
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(EINVAL)?,
            block_size,
            _bdev: PhantomData,
        })
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The number of whole blocks of the device
    /// (`dm_bufio_get_device_size()`).
    pub fn device_size(&self) -> u64 {
        // SAFETY: The client is live (type invariant).
        unsafe { bindings::dm_bufio_get_device_size(self.ptr.as_ptr()) }
    }

    /// Keeps at least `n` buffers cached (`dm_bufio_set_minimum_buffers()`),
    /// for example one in use plus the ones being prefetched.
    ///
    /// Takes `&mut self`: dm-bufio stores the value without its lock, so
    /// no other call on the client may run meanwhile.
    pub fn set_minimum_buffers(&mut self, n: u32) {
        // SAFETY: The client is live (type invariant), and the exclusive
        // borrow keeps every other call off it during the unlocked store.
        unsafe { bindings::dm_bufio_set_minimum_buffers(self.ptr.as_ptr(), n) };
    }

    /// Starts reading `count` blocks from `block` on in the background
    /// (`dm_bufio_prefetch()`); a later [`BufioClient::read`] of them finds them
    /// cached. The range is cut at the end of the device (dm-bufio would
    /// submit reads past it, which fail).
    ///
    /// Context: may sleep.
    pub fn prefetch(&self, block: u64, count: u32) {
        let left = self.device_size().saturating_sub(block);
        let count = u32::try_from(left).map_or(count, |left| count.min(left));
        if count == 0 {
            return;
        }
        // SAFETY: The client is live (type invariant).
        unsafe { bindings::dm_bufio_prefetch(self.ptr.as_ptr(), block, count) };
    }

    /// Drops `block` from the cache if it is cached and not in use
    /// (`dm_bufio_forget()`).
    ///
    /// Context: may sleep.
    pub fn forget(&self, block: u64) {
        // SAFETY: The client is live (type invariant).
        unsafe { bindings::dm_bufio_forget(self.ptr.as_ptr(), block) };
    }

    /// Reads `block` (`dm_bufio_read()`) and returns it, held until the
    /// guard is dropped.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the block lies past the end of the device; the errno of
    /// the failed read otherwise.
    ///
    /// Context: may sleep.
    pub fn read(&mut self, block: u64) -> Result<Buffer<'_>> {
        if block >= self.device_size() {
            return Err(EINVAL);
        }
        let mut bp: *mut bindings::dm_buffer = core::ptr::null_mut();
        // SAFETY: The client is live (type invariant); `bp` is a valid place
        // for the buffer pointer.
        let data =
            from_err_ptr(unsafe { bindings::dm_bufio_read(self.ptr.as_ptr(), block, &mut bp) })?;
        let data = NonNull::new(data.cast::<u8>()).ok_or(EINVAL)?;
        let buffer = NonNull::new(bp).ok_or(EINVAL)?;
        // INVARIANT: `dm_bufio_read` succeeded: `buffer` is held by us and
        // `data` points to its `block_size` bytes, read from the device.
        Ok(Buffer {
            buffer,
            data,
            len: self.block_size,
            _client: PhantomData,
        })
    }
}

impl Drop for BufioClient<'_> {
    fn drop(&mut self) {
        // SAFETY: The client is live and owned by `self` (type invariant).
        // No buffer is held: every `Buffer` borrows the client.
        unsafe { bindings::dm_bufio_client_destroy(self.ptr.as_ptr()) };
    }
}

/// A block held in the cache of a [`BufioClient`], released on drop
/// (`dm_bufio_release()`).
///
/// # Examples
///
/// ```
/// use crate::{block_device::BlockDeviceFile, device_mapper::bufio::BufioClient};
///
/// # let dev = BlockDeviceFile::open(1, 0, false)?; // brd's /dev/ram0
/// let mut client = BufioClient::new(&dev, 512)?;
/// let first = client.read(0)?;
/// let magic = u32::from_le_bytes([first[0], first[1], first[2], first[3]]);
/// // Releasing the block lets the client hand out another.
/// drop(first);
/// let second = client.read(1)?;
/// assert_eq!(second.len(), 512);
/// # let _ = magic;
/// ```
///
/// # Invariants
///
/// `buffer` is a buffer obtained from `dm_bufio_read()` and not yet
/// released; `data` points to its `len` bytes, which nobody writes while the
/// buffer is held by us.
pub struct Buffer<'c> {
    buffer: NonNull<bindings::dm_buffer>,
    data: NonNull<u8>,
    len: usize,
    _client: PhantomData<&'c mut ()>,
}

impl core::ops::Deref for Buffer<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: By the type invariant `data` points to `len` initialised
        // bytes that nobody writes while the buffer is held.
        unsafe { core::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the buffer is held and not released
        // yet; it is released exactly once, here.
        unsafe { bindings::dm_bufio_release(self.buffer.as_ptr()) };
    }
}
