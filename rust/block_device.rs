// SPDX-License-Identifier: GPL-2.0

//! Block devices held open by someone else.
//!
//! Device-mapper targets and exception stores never open or close block
//! devices themselves: dm core holds them open (through `struct dm_dev`) for
//! as long as the table that uses them exists. This module gives such users a
//! shared view of the device with the few queries they need.
//!
//! C header: [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)

use kernel::{
    bindings,
    types::Opaque, //
};

/// A block device that stays open while a reference to it exists.
///
/// # Examples
///
/// ```
/// use crate::block_device::{BlockDevice, BlockDeviceFile};
/// use kernel::block::SECTOR_SIZE;
///
/// fn bytes(dev: &BlockDevice) -> u64 {
///     dev.nr_sectors() * u64::from(SECTOR_SIZE)
/// }
///
/// # let file = BlockDeviceFile::open(1, 0, false)?; // brd's /dev/ram0
/// let dev: &BlockDevice = &file;
/// assert!(dev.logical_block_size() >= SECTOR_SIZE);
/// assert!(bytes(dev) > 0);
/// ```
///
/// # Invariants
///
/// `self.0` is a valid, open `struct block_device` for the lifetime of every
/// `&BlockDevice`.
#[repr(transparent)]
pub struct BlockDevice(Opaque<bindings::block_device>);

// SAFETY: A `struct block_device` may be used from any thread. Of what the
// queries below read, two values can change while the device is open: its
// size (`bd_nr_sectors`, written under `bd_size_lock` by a resize) and its
// queue's logical block size (written under `q->limits_lock` by a limits
// update). Both are read without those locks, through C's own
// `bdev_nr_sectors()` and `bdev_logical_block_size()`, as every C caller
// reads them: a read racing a resize may see the old value or the new, and
// a 64-bit size may tear on a 32-bit machine, as in C. No caller may take
// either to be the same from one call to the next.
unsafe impl Sync for BlockDevice {}

// SAFETY: As above: nothing about a block device is tied to one thread.
unsafe impl Send for BlockDevice {}

impl BlockDevice {
    /// Returns a reference to a block device from its raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `struct block_device` that stays open for
    /// the lifetime `'a` (for example the `bdev` of a `struct dm_dev` owned by
    /// a live dm table).
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::block_device) -> &'a Self {
        // SAFETY: `BlockDevice` is a transparent wrapper of the C type, and
        // the caller guarantees that the pointee is valid for `'a`.
        // INVARIANT: the caller guarantees the device stays open for `'a`.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// Returns the raw pointer to the `struct block_device`.
    pub fn as_raw(&self) -> *mut bindings::block_device {
        self.0.get()
    }

    /// Returns the size of the device in 512-byte sectors
    /// (`bdev_nr_sectors()`).
    pub fn nr_sectors(&self) -> u64 {
        // SAFETY: By the type invariant the device is valid and open.
        unsafe { bindings::bdev_nr_sectors(self.as_raw()) }
    }

    /// Returns the device's logical block size in bytes
    /// (`bdev_logical_block_size()`): a power of two from 512 to
    /// `BLK_MAX_BLOCK_SIZE` (64 KiB with transparent huge pages, else the page size).
    pub fn logical_block_size(&self) -> u32 {
        // SAFETY: By the type invariant the device is valid and open.
        unsafe { bindings::bdev_logical_block_size(self.as_raw()) }
    }
}

/// A block device opened by its device number, closed when dropped.
///
/// Device-mapper code is handed devices that dm core opened; this is for
/// code that opens one itself, such as tests.
///
/// # Examples
///
/// ```
/// use crate::block_device::BlockDeviceFile;
///
/// // brd's /dev/ram0, for reading; closed when `file` is dropped.
/// let file = BlockDeviceFile::open(1, 0, false)?;
/// assert!(file.nr_sectors() > 0);
/// // Numbers that do not fit a `dev_t` are refused.
/// assert_eq!(BlockDeviceFile::open(1 << 12, 0, false).err(), Some(EINVAL));
/// ```
///
/// # Invariants
///
/// `file` is a block device file returned by `bdev_file_open_by_path()`
/// that this value holds the only reference to, and `bdev` its device.
pub struct BlockDeviceFile {
    file: core::ptr::NonNull<bindings::file>,
    bdev: core::ptr::NonNull<bindings::block_device>,
}

// SAFETY: A block device file may be used and released from any thread.
unsafe impl Send for BlockDeviceFile {}

// SAFETY: `&BlockDeviceFile` only gives out `&BlockDevice`, which is `Sync`.
unsafe impl Sync for BlockDeviceFile {}

/// `BLK_OPEN_READ`, a macro with a cast that bindgen does not translate.
const BLK_OPEN_READ: bindings::blk_mode_t = 1 << 0;
/// `BLK_OPEN_WRITE`, likewise.
const BLK_OPEN_WRITE: bindings::blk_mode_t = 1 << 1;

impl BlockDeviceFile {
    /// Opens the block device `major:minor` for reading, and for writing if
    /// `write`, shared with other openers (`bdev_file_open_by_dev()`).
    ///
    /// # Errors
    ///
    /// `EINVAL` if the numbers do not fit a `dev_t`; otherwise the errno of
    /// the open (`ENXIO` when there is no such device, `EACCES`, ...).
    ///
    /// Context: process, may sleep.
    pub fn open(major: u32, minor: u32, write: bool) -> kernel::error::Result<Self> {
        use kernel::error::code::EINVAL;
        // MKDEV(): 12 bits of major, 20 bits of minor.
        if major >= 1 << 12 || minor >= 1 << 20 {
            return Err(EINVAL);
        }
        let dev: bindings::dev_t = (major << 20) | minor;
        let mode = if write {
            BLK_OPEN_READ | BLK_OPEN_WRITE
        } else {
            BLK_OPEN_READ
        };
        // SAFETY: No holder (a shared open), no holder operations.
        let file = kernel::error::from_err_ptr(unsafe {
            bindings::bdev_file_open_by_dev(dev, mode, core::ptr::null_mut(), core::ptr::null())
        })?;
        let file = core::ptr::NonNull::new(file).ok_or(EINVAL)?;
        // SAFETY: `file` is a block device file we hold.
        let bdev = unsafe { bindings::file_bdev(file.as_ptr()) };
        let Some(bdev) = core::ptr::NonNull::new(bdev) else {
            // SAFETY: We hold the only reference to `file`.
            unsafe { bindings::fput(file.as_ptr()) };
            return Err(EINVAL);
        };
        // INVARIANT: we hold `file`, and `bdev` is its device.
        Ok(Self { file, bdev })
    }
}

impl core::ops::Deref for BlockDeviceFile {
    type Target = BlockDevice;

    fn deref(&self) -> &BlockDevice {
        // SAFETY: The device stays open while we hold its file (type
        // invariant), which the borrow of `self` outlives.
        unsafe { BlockDevice::from_raw(self.bdev.as_ptr()) }
    }
}

impl Drop for BlockDeviceFile {
    fn drop(&mut self) {
        // SAFETY: We hold the only reference to `file` (type invariant);
        // it is released once, here.
        unsafe { bindings::fput(self.file.as_ptr()) };
    }
}
