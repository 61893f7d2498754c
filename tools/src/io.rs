// SPDX-License-Identifier: GPL-2.0-only

//! Block I/O behind a trait: a file or block-device backend and an
//! in-memory backend that can inject errors.
//!
//! The tools never look at what they read through anything but this trait,
//! so the tests reach every error path with [`MemIo`].

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Seek;
use std::io::SeekFrom;
use std::num::NonZeroU64;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Byte-addressed I/O on a COW device or image.
pub trait BlockIo {
    /// Size in bytes: the length of an image file, the size of a block
    /// device.
    fn size(&self) -> io::Result<u64>;

    /// Fills `buf` from byte `offset`.
    ///
    /// # Errors
    ///
    /// The backend's error; reading past the end is an
    /// [`io::ErrorKind::UnexpectedEof`] error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Writes all of `buf` at byte `offset`.
    ///
    /// # Errors
    ///
    /// The backend's error.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;

    /// Makes the writes so far durable.
    ///
    /// # Errors
    ///
    /// The backend's error.
    fn sync(&mut self) -> io::Result<()>;

    /// Says that `len` bytes from `offset` will be read soon, so that a
    /// backend can start reading them now. A hint: it does nothing by
    /// default, and its errors are ignored.
    fn will_need(&self, _offset: u64, _len: u64) {}

    /// Whether [`BlockIo::set_size`] can change the size (an image file
    /// can, a block device cannot).
    fn resizable(&self) -> bool {
        false
    }

    /// Sets the size in bytes; bytes past the old end read as zeros.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] if the size differs and the device is
    /// not [`BlockIo::resizable`], or the backend's error.
    fn set_size(&mut self, size: u64) -> io::Result<()> {
        if size == self.size()? {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "cannot change the size of this device",
            ))
        }
    }
}

/// A COW device or image file.
#[derive(Debug)]
pub struct FileIo {
    file: File,
    size: u64,
    block_device: bool,
    read_ahead: bool,
}

/// Whether `a` and `b` are the same file (device and inode), under
/// whatever names: a tool must never write over its own input.
pub fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

/// Refuses what is neither a regular file nor a block device (a character
/// device such as `/dev/zero`, a FIFO, a directory, a socket): it has no
/// size to hold a COW device.
fn check_kind(meta: &std::fs::Metadata) -> io::Result<()> {
    let kind = meta.file_type();
    if kind.is_file() || kind.is_block_device() {
        return Ok(());
    }
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}, not an image file or a block device"),
    ))
}

impl FileIo {
    /// Opens `path` read-only, a block device exclusively
    /// ([`FileIo::open_read_as`]).
    ///
    /// # Errors
    ///
    /// The error of `open` or of finding the size.
    pub fn open_read(path: &Path) -> io::Result<Self> {
        Self::open_read_as(path, true)
    }

    /// Opens `path` read-only; a block device with `O_EXCL` when
    /// `exclusive` is set, so that one in use (a live snapshot's COW device,
    /// held by device-mapper, or mounted) is refused: what a running
    /// snapshot writes meanwhile would make the reading inconsistent.
    ///
    /// # Errors
    ///
    /// The error of `open` (for a device in use, an error saying so), or of
    /// finding the size.
    pub fn open_read_as(path: &Path, exclusive: bool) -> io::Result<Self> {
        // Checked before opening: opening a FIFO would wait for a writer.
        let meta = std::fs::metadata(path)?;
        check_kind(&meta)?;
        let mut options = OpenOptions::new();
        options.read(true);
        if exclusive && meta.file_type().is_block_device() {
            options.custom_flags(libc::O_EXCL);
        }
        let file = options.open(path).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    "the device is in use (a live snapshot's COW device, or mounted); \
                     --force reads it anyway, but what the snapshot writes meanwhile can \
                     make the result inconsistent",
                )
            } else {
                e
            }
        })?;
        Self::from_file(file)
    }

    /// Opens `path` for reading and writing; if there is nothing at `path`
    /// and `create` is set, creates an empty image file there (give it its
    /// size with [`BlockIo::set_size`]). A block device is opened with
    /// `O_EXCL`, so the kernel refuses a device in use (mounted, or held by
    /// device-mapper). Returns whether the file was created.
    ///
    /// # Errors
    ///
    /// The error of `open`, or of finding the size.
    pub fn open_write(path: &Path, create: bool) -> io::Result<(Self, bool)> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => None,
            Err(e) => return Err(e),
        };
        if let Some(m) = &meta {
            check_kind(m)?;
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        match &meta {
            Some(m) if m.file_type().is_block_device() => {
                options.custom_flags(libc::O_EXCL);
            }
            Some(_) => {}
            None => {
                options.create_new(true);
            }
        }
        let file = options.open(path)?;
        Ok((Self::from_file(file)?, meta.is_none()))
    }

    fn from_file(mut file: File) -> io::Result<Self> {
        let block_device = file.metadata()?.file_type().is_block_device();
        // Seeking to the end gives the size of regular files and block
        // devices alike (no ioctl needed).
        let size = file.seek(SeekFrom::End(0))?;
        Ok(Self {
            file,
            size,
            block_device,
            read_ahead: true,
        })
    }

    /// Turns [`BlockIo::will_need`] off (or on again): every read then
    /// waits for the device on its own, as a serial reader does.
    pub fn set_read_ahead(&mut self, on: bool) {
        self.read_ahead = on;
    }

    /// Whether this is a block device (whose size cannot change).
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }
}

impl BlockIo for FileIo {
    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// `posix_fadvise(POSIX_FADV_WILLNEED)`: the kernel starts reading the
    /// range into the page cache and returns at once, so that the reads of
    /// many areas are in flight together instead of one after the other.
    fn will_need(&self, offset: u64, len: u64) {
        if self.read_ahead && offset < self.size {
            let _ = rustix::fs::fadvise(
                &self.file,
                offset,
                NonZeroU64::new(len),
                rustix::fs::Advice::WillNeed,
            );
        }
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn resizable(&self) -> bool {
        !self.block_device
    }

    fn set_size(&mut self, size: u64) -> io::Result<()> {
        if size == self.size {
            return Ok(());
        }
        if self.block_device {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "cannot change the size of a block device",
            ));
        }
        self.file.set_len(size)?;
        self.size = size;
        Ok(())
    }
}

/// Which operation a [`Fault`] fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// [`BlockIo::read_at`].
    Read,
    /// [`BlockIo::write_at`].
    Write,
    /// [`BlockIo::sync`] (the range is ignored).
    Sync,
}

/// An injected error: `op` on any byte of `range` fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The operation that fails.
    pub op: Op,
    /// The bytes it fails on.
    pub range: Range<u64>,
}

/// An in-memory device that can fail chosen operations.
#[derive(Clone, Debug, Default)]
pub struct MemIo {
    /// The device's bytes.
    pub data: Vec<u8>,
    /// The injected errors.
    pub faults: Vec<Fault>,
    /// Bytes written by successful writes.
    pub bytes_written: u64,
    /// The offsets given to [`BlockIo::will_need`], in order.
    pub advised: std::cell::RefCell<Vec<u64>>,
}

impl MemIo {
    /// A device holding `data`, with no fault.
    pub fn new(data: Vec<u8>) -> Self {
        Self {
            data,
            faults: Vec::new(),
            bytes_written: 0,
            advised: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Adds a fault.
    pub fn fail(mut self, op: Op, range: Range<u64>) -> Self {
        self.faults.push(Fault { op, range });
        self
    }

    fn check(&self, op: Op, offset: u64, len: usize) -> io::Result<Range<usize>> {
        let end = u64::try_from(len)
            .ok()
            .and_then(|l| offset.checked_add(l))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        for f in &self.faults {
            let hit = match op {
                Op::Sync => f.op == Op::Sync,
                _ => f.op == op && f.range.start < end && offset < f.range.end,
            };
            if hit {
                return Err(io::Error::other(format!(
                    "injected {op:?} error at bytes {offset}..{end}"
                )));
            }
        }
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = usize::try_from(end).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        Ok(start..end)
    }
}

impl BlockIo for MemIo {
    fn size(&self) -> io::Result<u64> {
        u64::try_from(self.data.len()).map_err(|_| io::ErrorKind::InvalidData.into())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let range = self.check(Op::Read, offset, buf.len())?;
        let src = self
            .data
            .get(range)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn will_need(&self, offset: u64, _len: u64) {
        self.advised.borrow_mut().push(offset);
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let range = self.check(Op::Write, offset, buf.len())?;
        let dst = self
            .data
            .get_mut(range)
            .ok_or_else(|| io::Error::new(io::ErrorKind::WriteZero, "write past the device end"))?;
        dst.copy_from_slice(buf);
        self.bytes_written = self
            .bytes_written
            .saturating_add(u64::try_from(buf.len()).unwrap_or(u64::MAX));
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.check(Op::Sync, 0, 0).map(|_| ())
    }

    fn resizable(&self) -> bool {
        true
    }

    fn set_size(&mut self, size: u64) -> io::Result<()> {
        let size =
            usize::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        self.data.resize(size, 0);
        Ok(())
    }
}
