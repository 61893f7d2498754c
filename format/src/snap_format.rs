// SPDX-License-Identifier: GPL-2.0-only

//! Format core of the device-mapper snapshot persistent exception store.
//!
//! This module holds every piece of the persistent store that needs no
//! kernel service: the on-disk format (header and exception records), the
//! layout arithmetic of metadata areas, the chunk-size rules, the header
//! decision taken at activation, the validating area scanner, the commit
//! state machine and the merge bookkeeping. The kernel side performs the I/O
//! these functions ask for and forwards results back; it keeps no logic of
//! its own.
//!
//! The file is written to be compiled twice: as the host crate
//! `dm-snap-format` (through `lib.rs`) and as a plain module of a kernel
//! module (`#[path = ".../snap_format.rs"] mod snap_format;`). It therefore
//! uses only `core`, never allocates, and never panics: arithmetic is
//! checked, slices are reached with `get()`/`chunks_exact()`, and every
//! failure is a value of [`Error`].
//!
//! C source: [drivers/md/dm-snap-persistent.c](srctree/drivers/md/dm-snap-persistent.c)
//!
//! C header: [drivers/md/dm-exception-store.h](srctree/drivers/md/dm-exception-store.h)
//!
//! # On-disk format
//!
//! All integers are little endian. A chunk is `chunk_size` sectors of 512
//! bytes.
//!
//! - Chunk 0 holds the header (16 bytes: `magic`, `valid`, `version`,
//!   `chunk_size` in sectors, each `u32`); the rest of the chunk is zero when
//!   this store writes it.
//! - Metadata area `i` is one chunk at [`Layout::area_location`]`(i)` =
//!   `1 + i * (exceptions_per_area + 1)`. It is followed by the
//!   `exceptions_per_area` data chunks whose exceptions it records.
//! - An area is an array of `exceptions_per_area = chunk_bytes / 16` records
//!   `{old_chunk: u64, new_chunk: u64}`. The first record whose `new_chunk`
//!   is 0 ends the area (0 is the header chunk, which no exception can use).
//!   An area with no end marker is full and the scan continues with the next.

#![forbid(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented,
    clippy::as_conversions
)]

use core::cmp::max;
use core::fmt;
use core::ops::Range;

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// Magic number of a persistent snapshot header, the bytes `"SnAp"`.
///
/// C: `SNAP_MAGIC`.
pub const SNAP_MAGIC: u32 = 0x7041_6e53;

/// The only on-disk format version this store understands.
///
/// C: `SNAPSHOT_DISK_VERSION`.
pub const SNAPSHOT_DISK_VERSION: u32 = 1;

/// Number of chunks at the start of the COW device that hold the header.
///
/// C: `NUM_SNAPSHOT_HDR_CHUNKS`.
pub const NUM_SNAPSHOT_HDR_CHUNKS: u64 = 1;

/// Chunk size, in sectors, used when the table gives none (16 KiB).
///
/// C: `DM_CHUNK_SIZE_DEFAULT_SECTORS`.
pub const DM_CHUNK_SIZE_DEFAULT_SECTORS: u32 = 32;

/// How many metadata areas the activation scan reads ahead.
///
/// C: `DM_PREFETCH_CHUNKS`.
pub const DM_PREFETCH_CHUNKS: u64 = 12;

/// Bytes in a sector.
///
/// C: `SECTOR_SIZE` (`1 << SECTOR_SHIFT`).
pub const SECTOR_SIZE: u32 = 512;

/// Number of low bits of a `chunk_t` that hold the chunk number inside
/// dm-snapshot's in-memory exception table (the top 8 bits count
/// consecutive chunks).
///
/// C: `DM_CHUNK_NUMBER_BITS`.
pub const DM_CHUNK_NUMBER_BITS: u32 = 56;

/// Largest chunk number dm-snapshot can hold in memory, `2^56 - 1`.
///
/// C: the mask of `dm_chunk_number()`.
pub const DM_CHUNK_NUMBER_MAX: u64 = 0x00ff_ffff_ffff_ffff;

/// Size in bytes of the on-disk header.
///
/// C: `sizeof(struct disk_header)`.
pub const DISK_HEADER_SIZE: usize = 16;

/// Size in bytes of one on-disk exception record.
///
/// C: `sizeof(struct disk_exception)`.
pub const DISK_EXCEPTION_SIZE: usize = 16;

/// Upper bound of a chunk size in sectors: a chunk in bytes must fit an
/// `int`.
///
/// C: `INT_MAX >> SECTOR_SHIFT` in `dm_exception_store_set_chunk_size()`.
pub const CHUNK_SIZE_LIMIT_SECTORS: u32 = 0x7fff_ffff >> 9;

/// Largest chunk size, in sectors, that passes every rule (`2^21`, 1 GiB):
/// the largest power of two not above [`CHUNK_SIZE_LIMIT_SECTORS`].
///
/// No C counterpart (follows from the C rules).
pub const MAX_CHUNK_SECTORS: u32 = 1 << 21;

/// Largest chunk size in bytes (`2^30`).
///
/// No C counterpart (follows from the C rules).
pub const MAX_CHUNK_BYTES: u32 = 1 << 30;

/// Largest size, in sectors, any block device can have: its size in bytes
/// must fit a signed 64-bit `loff_t`.
///
/// No C counterpart (the kernel's `MAX_LFS_FILESIZE >> SECTOR_SHIFT`); used
/// to bound `old_chunk` values read from disk.
pub const MAX_DEVICE_SECTORS: u64 = 0x7fff_ffff_ffff_ffff >> 9;

/// Value of `next_free` for a store with no exception: the header and the
/// first metadata area are in use.
///
/// C: `NUM_SNAPSHOT_HDR_CHUNKS + 1` in `persistent_ctr()`.
pub const INITIAL_NEXT_FREE: u64 = 2;

/// Message prefix of the C store's log lines.
///
/// C: `DM_MSG_PREFIX`.
pub const DM_MSG_PREFIX: &str = "persistent snapshot";

/// Positive errno values the core reports; the kernel side negates them.
///
/// C: `include/uapi/asm-generic/errno-base.h`.
pub mod errno {
    /// I/O error. C: `EIO`.
    pub const EIO: i32 = 5;
    /// No such device or address. C: `ENXIO`.
    pub const ENXIO: i32 = 6;
    /// Out of memory. C: `ENOMEM`.
    pub const ENOMEM: i32 = 12;
    /// Invalid argument. C: `EINVAL`.
    pub const EINVAL: i32 = 22;
    /// No space left on device. C: `ENOSPC`.
    pub const ENOSPC: i32 = 28;
}

/// Texts the C store logs for conditions that only the kernel side sees
/// (failed allocations, registrations and header writes). The kernel side
/// prints them as they are so that logs match the C store.
pub mod messages {
    /// Logged with `DMERR` when the metadata workqueue cannot be created
    /// (`-ENOMEM`). C: `persistent_ctr()`.
    pub const WORKQUEUE_FAILED: &str = "couldn't start header metadata update thread";
    /// Logged with `DMWARN` when writing a new header fails at activation.
    /// C: `persistent_read_metadata()`.
    pub const WRITE_HEADER_FAILED: &str = "write_header failed";
    /// Logged with `DMWARN` when zeroing area 0 of a new store fails.
    /// C: `persistent_read_metadata()`.
    pub const ZERO_DISK_AREA_0_FAILED: &str = "zero_disk_area(0) failed";
    /// Logged with `DMWARN` when writing the invalidated header fails.
    /// C: `persistent_drop_snapshot()`.
    pub const DROP_WRITE_HEADER_FAILED: &str = "write header failed";
    /// Logged with `DMERR` when registering the `persistent` type fails.
    /// C: `dm_persistent_snapshot_init()`.
    pub const REGISTER_FAILED: &str = "Unable to register persistent exception store type";
    /// Logged with `DMERR` when registering the `P` type fails.
    /// C: `dm_persistent_snapshot_init()`.
    pub const REGISTER_COMPAT_FAILED: &str =
        "Unable to register old-style persistent exception store type";
    /// Name of the store type. C: `_persistent_type.name`.
    pub const TYPE_NAME: &str = "persistent";
    /// Name of the compatible store type. C: `_persistent_compat_type.name`.
    pub const COMPAT_TYPE_NAME: &str = "P";
}

// ---------------------------------------------------------------------------
// Small conversion helpers (no `as`)
// ---------------------------------------------------------------------------

/// `u32` to `usize`; `None` only on targets with a 16-bit `usize`.
fn usize_of(v: u32) -> Option<usize> {
    usize::try_from(v).ok()
}

/// Byte offset of exception `index` inside an area.
fn exception_offset(index: u32) -> Option<usize> {
    usize_of(index)?.checked_mul(DISK_EXCEPTION_SIZE)
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let b: [u8; 4] = bytes.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

fn le64(bytes: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(8)?;
    let b: [u8; 8] = bytes.get(at..end)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

fn put(bytes: &mut [u8], at: usize, value: &[u8]) -> Option<()> {
    let end = at.checked_add(value.len())?;
    bytes.get_mut(at..end)?.copy_from_slice(value);
    Some(())
}

// ---------------------------------------------------------------------------
// Errors and warnings
// ---------------------------------------------------------------------------

/// Why a chunk size was refused.
///
/// C: the `*error` strings of `dm_exception_store_set_chunk_size()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChunkSizeError {
    /// The chunk size is not a power of two (0 included).
    NotPowerOf2,
    /// The chunk size is not a multiple of the logical block size of the
    /// origin or of the COW device.
    NotMultipleOfBlockSize,
    /// The chunk size in bytes does not fit an `int`.
    TooHigh,
}

impl ChunkSizeError {
    /// The reason text, as C stores it in `*error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotPowerOf2 => "Chunk size is not a power of 2",
            Self::NotMultipleOfBlockSize => "Chunk size is not a multiple of device blocksize",
            Self::TooHigh => "Chunk size is too high",
        }
    }

    /// Positive errno: always `EINVAL`, as in C.
    pub const fn errno(self) -> i32 {
        errno::EINVAL
    }
}

impl fmt::Display for ChunkSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Log level the C store uses for a message.
///
/// C: `DMWARN` / `DMERR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// C: `DMWARN`.
    Warn,
    /// C: `DMERR`.
    Err,
}

/// Every failure the format core reports.
///
/// Each variant's `Display` is the C message where C has one, otherwise a
/// message of our own naming the numbers involved. [`Error::errno`] gives
/// the positive errno the C store returns for the condition (or the one we
/// chose for conditions C does not check).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The header's magic is neither 0 nor [`SNAP_MAGIC`].
    ///
    /// C: `read_header()`, "Invalid or corrupt snapshot", `-ENXIO`.
    InvalidOrCorrupt {
        /// The magic found on disk.
        magic: u32,
    },
    /// The header's version is not [`SNAPSHOT_DISK_VERSION`].
    ///
    /// C: `persistent_read_metadata()`, "unable to handle snapshot disk
    /// version %d", `-EINVAL`.
    UnsupportedVersion {
        /// The version found on disk, printed as C's `int`.
        version: i32,
    },
    /// The chunk size in the header is refused by the chunk-size rules.
    ///
    /// C: `read_header()`, "invalid on-disk chunk size %u: %s.", `-EINVAL`.
    InvalidOnDiskChunkSize {
        /// The chunk size found on disk, in sectors.
        chunk_size: u32,
        /// Why it was refused.
        reason: ChunkSizeError,
    },
    /// The chunk size in the header is too large for the COW device to hold
    /// the header chunk and metadata area 0.
    ///
    /// No C check (C allocates three chunk-sized buffers first, then its
    /// read of area 0 fails, or an invalid snapshot loads), `-EIO` as C's
    /// failed read.
    OnDiskChunkBeyondDevice {
        /// The chunk size found on disk, in sectors.
        chunk_size: u32,
        /// Sectors of the COW device.
        cow_sectors: u64,
    },
    /// The COW device is smaller than one chunk of the table's chunk size,
    /// so not even the header chunk can be read.
    ///
    /// No C check (C's read of the header chunk fails), `-EINVAL`.
    CowSmallerThanChunk {
        /// The table's chunk size, in sectors.
        chunk_size: u32,
        /// Sectors of the COW device.
        cow_sectors: u64,
    },
    /// The chunk size of the table is refused by the chunk-size rules.
    ///
    /// C: `dm_exception_store_set_chunk_size()` setting `ti->error`; the
    /// text is the bare reason, `-EINVAL`.
    InvalidChunkSize {
        /// The chunk size given, in sectors.
        chunk_size: u32,
        /// Why it was refused.
        reason: ChunkSizeError,
    },
    /// A logical block size is not a power of two in `512..=2^30` bytes.
    ///
    /// No C counterpart (the kernel guarantees it), `-EINVAL`.
    InvalidBlockSize {
        /// The block size given, in bytes.
        bytes: u32,
    },
    /// A buffer handed to the core has the wrong length.
    ///
    /// No C counterpart (C buffers are sized by construction), `-EINVAL`.
    BufferSize {
        /// Bytes the core needs.
        expected: u64,
        /// Bytes it was given.
        actual: u64,
    },
    /// An exception index is outside the area.
    ///
    /// C: `BUG_ON(index >= ps->exceptions_per_area)` in `get_exception()`;
    /// here `-EINVAL`.
    IndexOutOfArea {
        /// The index asked for.
        index: u32,
        /// Exceptions per area.
        exceptions_per_area: u32,
    },
    /// A metadata area the scan must read lies beyond the end of the COW
    /// device (the previous area was full).
    ///
    /// No C check (C's read of the missing chunk fails), `-EIO`.
    AreaBeyondDevice {
        /// The area index.
        area: u64,
        /// Its chunk.
        chunk: u64,
        /// Whole chunks on the COW device.
        cow_chunks: u64,
    },
    /// An exception's `new_chunk` is at or after the end of the COW device.
    ///
    /// No C check, `-EINVAL`.
    NewChunkBeyondDevice {
        /// Area holding the exception.
        area: u64,
        /// Index of the exception in the area.
        index: u32,
        /// The offending value.
        new_chunk: u64,
        /// Whole chunks on the COW device.
        cow_chunks: u64,
    },
    /// An exception's `new_chunk` is the chunk of a metadata area.
    ///
    /// No C check, `-EINVAL`.
    NewChunkIsMetadata {
        /// Area holding the exception.
        area: u64,
        /// Index of the exception in the area.
        index: u32,
        /// The offending value.
        new_chunk: u64,
        /// The metadata area that chunk belongs to.
        metadata_area: u64,
    },
    /// An exception to be committed has `new_chunk` 0, the header chunk (on
    /// disk this value is the end marker, so only commits can hit this).
    ///
    /// No C check, `-EINVAL`.
    NewChunkIsHeader {
        /// Area that would hold the exception.
        area: u64,
        /// Index it would take.
        index: u32,
    },
    /// An exception's `old_chunk` lies beyond the largest block device the
    /// kernel can address (or beyond dm's 56-bit chunk numbers).
    ///
    /// No C check, `-EINVAL`.
    OldChunkTooLarge {
        /// Area holding the exception.
        area: u64,
        /// Index of the exception in the area.
        index: u32,
        /// The offending value.
        old_chunk: u64,
        /// Largest value accepted for this chunk size.
        max: u64,
    },
    /// An area read back for a merge, which must be full, has an end marker.
    ///
    /// No C check (C would merge from the header chunk), `-EINVAL`.
    UnexpectedEndMarker {
        /// Area holding the marker.
        area: u64,
        /// Its index.
        index: u32,
    },
    /// The exception callback refused an exception.
    ///
    /// C: the `callback` return in `insert_exceptions()` (no message).
    Callback {
        /// Its positive errno.
        errno: i32,
    },
    /// Reading a chunk failed in [`scan_areas`].
    ///
    /// C: the `dm_bufio_read()` failure in `read_exceptions()` (no message).
    ReadFailed {
        /// The chunk being read.
        chunk: u64,
        /// The positive errno of the read.
        errno: i32,
    },
    /// No room left on the COW device for another exception.
    ///
    /// C: `persistent_prepare_exception()`, `-ENOSPC` (no message).
    NoSpace {
        /// The chunk that would have been allocated.
        chunk: u64,
        /// Sectors on the COW device.
        cow_sectors: u64,
    },
    /// Too many prepared exceptions are pending (counter overflow).
    ///
    /// No C check (`atomic_t`), `-ENOSPC`.
    TooManyPending,
    /// Two exceptions use the same COW chunk.
    ///
    /// No C check (C accepts it), `-EINVAL`.
    DuplicateNewChunk {
        /// The shared chunk.
        chunk: u64,
        /// Area of the first record using it.
        first_area: u64,
        /// Index of the first record in its area.
        first_index: u32,
        /// Area of the second record.
        area: u64,
        /// Index of the second record in its area.
        index: u32,
    },
    /// `commit_exception` was called with no prepared exception pending.
    ///
    /// No C check (C's counter would go negative), `-EINVAL`.
    CommitWithoutPrepare,
    /// A call was made while a commit flush waits for I/O results.
    ///
    /// No C counterpart (C does the I/O synchronously), `-EINVAL`.
    FlushInProgress,
    /// `commit_io_done` was called with no flush waiting for I/O.
    ///
    /// No C counterpart, `-EINVAL`.
    NoFlushInProgress,
    /// A scan call came after the scan had finished, or `finish` came before.
    ///
    /// No C counterpart, `-EINVAL`.
    ScanState,
    /// `commit_merge` asked to clear more exceptions than were prepared.
    ///
    /// C: `BUG_ON(nr_merged > ps->current_committed)`; here `-EINVAL`.
    MergeCountInvalid {
        /// Number asked for.
        nr_merged: u32,
        /// Number prepared by the last `prepare_merge`.
        prepared: u32,
    },
    /// A merge call came out of order (no read asked for, no run prepared,
    /// no write waiting).
    ///
    /// No C counterpart, `-EINVAL`.
    MergeState,
    /// A previous `commit_merge` write failed; merging must not continue
    /// until the snapshot is reloaded.
    ///
    /// No C check, `-EIO`.
    MergeCommitFailed,
    /// Chunk arithmetic overflowed (only reachable with impossible sizes).
    ///
    /// No C check, `-EINVAL`.
    Overflow,
}

impl Error {
    /// The positive errno of this condition, to be negated by the kernel
    /// side. For [`Error::Callback`] and [`Error::ReadFailed`] it is the
    /// errno given by the caller (or `EIO` if that was not positive).
    ///
    /// C: the `-E...` value the C store returns (see each variant).
    pub const fn errno(&self) -> i32 {
        match self {
            Self::InvalidOrCorrupt { .. } => errno::ENXIO,
            Self::AreaBeyondDevice { .. }
            | Self::OnDiskChunkBeyondDevice { .. }
            | Self::MergeCommitFailed => errno::EIO,
            Self::NoSpace { .. } | Self::TooManyPending => errno::ENOSPC,
            Self::Callback { errno: e } | Self::ReadFailed { errno: e, .. } => {
                if *e > 0 {
                    *e
                } else {
                    errno::EIO
                }
            }
            Self::UnsupportedVersion { .. }
            | Self::InvalidOnDiskChunkSize { .. }
            | Self::InvalidChunkSize { .. }
            | Self::CowSmallerThanChunk { .. }
            | Self::InvalidBlockSize { .. }
            | Self::BufferSize { .. }
            | Self::IndexOutOfArea { .. }
            | Self::NewChunkBeyondDevice { .. }
            | Self::NewChunkIsMetadata { .. }
            | Self::NewChunkIsHeader { .. }
            | Self::OldChunkTooLarge { .. }
            | Self::UnexpectedEndMarker { .. }
            | Self::DuplicateNewChunk { .. }
            | Self::CommitWithoutPrepare
            | Self::FlushInProgress
            | Self::NoFlushInProgress
            | Self::ScanState
            | Self::MergeCountInvalid { .. }
            | Self::MergeState
            | Self::Overflow => errno::EINVAL,
        }
    }

    /// How the C store logs this condition, or `None` where C stays silent
    /// (the caller's own message is enough, or the condition is frequent
    /// like `-ENOSPC`). Conditions C does not check are `Some(Err)`.
    pub const fn c_log_level(&self) -> Option<LogLevel> {
        match self {
            Self::InvalidOrCorrupt { .. } | Self::UnsupportedVersion { .. } => Some(LogLevel::Warn),
            Self::NoSpace { .. }
            | Self::Callback { .. }
            | Self::ReadFailed { .. }
            | Self::InvalidChunkSize { .. } => None,
            _ => Some(LogLevel::Err),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidOrCorrupt { .. } => f.write_str("Invalid or corrupt snapshot"),
            Self::UnsupportedVersion { version } => {
                write!(f, "unable to handle snapshot disk version {version}")
            }
            Self::InvalidOnDiskChunkSize { chunk_size, reason } => {
                write!(f, "invalid on-disk chunk size {chunk_size}: {reason}.")
            }
            Self::OnDiskChunkBeyondDevice {
                chunk_size,
                cow_sectors,
            } => write!(
                f,
                "on-disk chunk size {chunk_size} leaves no room for the header and metadata area 0 on a COW device of {cow_sectors} sectors"
            ),
            Self::CowSmallerThanChunk {
                chunk_size,
                cow_sectors,
            } => write!(
                f,
                "COW device of {cow_sectors} sectors is smaller than one chunk ({chunk_size} sectors)"
            ),
            Self::InvalidChunkSize { reason, .. } => write!(f, "{reason}"),
            Self::InvalidBlockSize { bytes } => write!(
                f,
                "logical block size {bytes} is not a power of two between 512 and {MAX_CHUNK_BYTES} bytes"
            ),
            Self::BufferSize { expected, actual } => {
                write!(f, "buffer is {actual} bytes, expected {expected}")
            }
            Self::IndexOutOfArea {
                index,
                exceptions_per_area,
            } => write!(
                f,
                "exception index {index} is outside an area of {exceptions_per_area} exceptions"
            ),
            Self::AreaBeyondDevice {
                area,
                chunk,
                cow_chunks,
            } => write!(
                f,
                "metadata area {area} at chunk {chunk} is beyond the end of the COW device ({cow_chunks} chunks)"
            ),
            Self::NewChunkBeyondDevice {
                area,
                index,
                new_chunk,
                cow_chunks,
            } => write!(
                f,
                "exception {index} of area {area}: new_chunk {new_chunk} is beyond the end of the COW device ({cow_chunks} chunks)"
            ),
            Self::NewChunkIsMetadata {
                area,
                index,
                new_chunk,
                metadata_area,
            } => write!(
                f,
                "exception {index} of area {area}: new_chunk {new_chunk} is the chunk of metadata area {metadata_area}"
            ),
            Self::NewChunkIsHeader { area, index } => write!(
                f,
                "exception {index} of area {area}: new_chunk 0 is the header chunk"
            ),
            Self::OldChunkTooLarge {
                area,
                index,
                old_chunk,
                max,
            } => write!(
                f,
                "exception {index} of area {area}: old_chunk {old_chunk} is beyond the largest chunk number {max}"
            ),
            Self::UnexpectedEndMarker { area, index } => write!(
                f,
                "exception {index} of area {area}: end marker inside an area that must be full"
            ),
            Self::DuplicateNewChunk {
                chunk,
                first_area,
                first_index,
                area,
                index,
            } => write!(
                f,
                "exception {index} of area {area}: new_chunk {chunk} is already used by exception {first_index} of area {first_area}"
            ),
            Self::Callback { errno } => {
                write!(f, "exception callback failed with error {errno}")
            }
            Self::ReadFailed { chunk, errno } => {
                write!(f, "reading chunk {chunk} failed with error {errno}")
            }
            Self::NoSpace { chunk, cow_sectors } => write!(
                f,
                "COW device full: chunk {chunk} does not fit in {cow_sectors} sectors"
            ),
            Self::TooManyPending => f.write_str("too many prepared exceptions pending"),
            Self::CommitWithoutPrepare => {
                f.write_str("commit_exception called with no prepared exception pending")
            }
            Self::FlushInProgress => f.write_str("a metadata flush is waiting for I/O"),
            Self::NoFlushInProgress => f.write_str("no metadata flush is waiting for I/O"),
            Self::ScanState => f.write_str("metadata scan called out of order"),
            Self::MergeCountInvalid {
                nr_merged,
                prepared,
            } => write!(
                f,
                "cannot merge {nr_merged} exceptions: {prepared} were prepared"
            ),
            Self::MergeState => f.write_str("merge step called out of order"),
            Self::MergeCommitFailed => f.write_str(
                "an earlier merge commit failed to write; reload the snapshot before merging",
            ),
            Self::Overflow => f.write_str("chunk arithmetic overflowed"),
        }
    }
}

/// Conditions worth a log line that do not stop the store.
///
/// C: the `DMWARN` calls that do not fail the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Warning {
    /// The header's chunk size differs from the one the table supplied.
    ///
    /// C: `read_header()`, `DMWARN` "chunk size %u in device metadata
    /// overrides table chunk size of %u.".
    ChunkSizeOverride {
        /// Chunk size in the header, in sectors.
        disk: u32,
        /// Chunk size of the table, in sectors.
        table: u32,
    },
    /// The last area has nonzero bytes in or after its end-marker record.
    /// They are ignored (as C does) and cleared in memory so that the next
    /// area write removes them from disk.
    ///
    /// No C counterpart (C ignores them silently).
    GarbageAfterEndMarker {
        /// The area.
        area: u64,
        /// Index of the end marker.
        end: u32,
        /// Index of the first nonzero record at or after it.
        first: u32,
        /// Number of nonzero records at or after it.
        records: u32,
    },
}

impl Warning {
    /// Log level: always `DMWARN` (C: `DMWARN`).
    pub const fn c_log_level(&self) -> LogLevel {
        LogLevel::Warn
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ChunkSizeOverride { disk, table } => write!(
                f,
                "chunk size {disk} in device metadata overrides table chunk size of {table}."
            ),
            Self::GarbageAfterEndMarker {
                area,
                end,
                first,
                records,
            } => write!(
                f,
                "area {area}: {records} nonzero exception records after the end marker at index {end} (first at {first}) ignored and cleared"
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Block and chunk sizes
// ---------------------------------------------------------------------------

/// A logical block size in bytes.
///
/// No C counterpart (C calls `bdev_logical_block_size()` where needed).
///
/// # Invariants
///
/// `bytes` is a power of two in `512..=MAX_CHUNK_BYTES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogicalBlockSize {
    bytes: u32,
}

impl LogicalBlockSize {
    /// A 512-byte block size. C: `SECTOR_SIZE`.
    pub const SECTOR: Self = Self { bytes: SECTOR_SIZE };

    /// Checks a block size in bytes.
    ///
    /// No C counterpart (the block layer guarantees it).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBlockSize`] unless `bytes` is a power of two in
    /// `512..=2^30`.
    pub const fn new(bytes: u32) -> Result<Self, Error> {
        if bytes.is_power_of_two() && bytes >= SECTOR_SIZE && bytes <= MAX_CHUNK_BYTES {
            // INVARIANT: checked just above.
            Ok(Self { bytes })
        } else {
            Err(Error::InvalidBlockSize { bytes })
        }
    }

    /// The size in bytes. C: `bdev_logical_block_size()`.
    pub const fn bytes(self) -> u32 {
        self.bytes
    }

    /// The size in sectors (C: `bdev_logical_block_size(bdev) >> 9`).
    pub const fn sectors(self) -> u32 {
        self.bytes.wrapping_shr(9)
    }
}

/// The logical block sizes of the two devices of a snapshot, which bound
/// the chunk size.
///
/// C: `bdev_logical_block_size()` of `dm_snap_origin()` and `dm_snap_cow()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockSizes {
    /// Logical block size of the origin device.
    pub origin: LogicalBlockSize,
    /// Logical block size of the COW device.
    pub cow: LogicalBlockSize,
}

impl BlockSizes {
    /// Both devices with 512-byte blocks (accepts every chunk size that is
    /// a power of two up to the maximum). No C counterpart.
    pub const SECTOR: Self = Self {
        origin: LogicalBlockSize::SECTOR,
        cow: LogicalBlockSize::SECTOR,
    };

    /// Checks both sizes, given in bytes. No C counterpart.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBlockSize`] for the first size that is not a power
    /// of two in `512..=2^30`.
    pub const fn new(origin_bytes: u32, cow_bytes: u32) -> Result<Self, Error> {
        let origin = match LogicalBlockSize::new(origin_bytes) {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
        let cow = match LogicalBlockSize::new(cow_bytes) {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
        Ok(Self { origin, cow })
    }
}

/// A validated chunk size.
///
/// C: `store->chunk_size` with `chunk_mask` and `chunk_shift`.
///
/// # Invariants
///
/// `sectors` is a power of two in `1..=MAX_CHUNK_SECTORS`, `shift` is its
/// base-2 logarithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkSize {
    sectors: u32,
}

impl ChunkSize {
    /// The default chunk size, 32 sectors.
    ///
    /// C: `DM_CHUNK_SIZE_DEFAULT_SECTORS`.
    pub const DEFAULT: Self = Self {
        sectors: DM_CHUNK_SIZE_DEFAULT_SECTORS,
    };

    /// The smallest chunk size, one sector.
    ///
    /// No C counterpart (follows from the C rules).
    pub const MIN: Self = Self { sectors: 1 };

    /// The largest chunk size, `2^21` sectors.
    ///
    /// No C counterpart (follows from the C rules).
    pub const MAX: Self = Self {
        sectors: MAX_CHUNK_SECTORS,
    };

    /// Applies the chunk-size rules, in C's order: power of two, multiple of
    /// both logical block sizes (in sectors), at most `INT_MAX >> 9`.
    ///
    /// C: `dm_exception_store_set_chunk_size()`.
    ///
    /// # Errors
    ///
    /// The [`ChunkSizeError`] of the first rule broken.
    pub const fn new(sectors: u32, blocks: BlockSizes) -> Result<Self, ChunkSizeError> {
        if !sectors.is_power_of_two() {
            return Err(ChunkSizeError::NotPowerOf2);
        }
        // Block sizes are powers of two of at least one sector, so a
        // power-of-two chunk size is a multiple of one exactly when it is
        // not smaller.
        if sectors < blocks.cow.sectors() || sectors < blocks.origin.sectors() {
            return Err(ChunkSizeError::NotMultipleOfBlockSize);
        }
        if sectors > CHUNK_SIZE_LIMIT_SECTORS {
            return Err(ChunkSizeError::TooHigh);
        }
        // INVARIANT: a power of two at most `INT_MAX >> 9` is at most 2^21.
        Ok(Self { sectors })
    }

    /// The default chunk size for a COW device: 32 sectors, or the COW's
    /// logical block size if larger. Like C, the origin's block size is not
    /// consulted.
    ///
    /// C: the `!ps->store->chunk_size` branch of `read_header()`.
    pub const fn default_for(cow: LogicalBlockSize) -> Self {
        let s = cow.sectors();
        // INVARIANT: `cow` is a power of two of at most 2^30 bytes, so `s`
        // is a power of two of at most 2^21 sectors, as is 32.
        if s > DM_CHUNK_SIZE_DEFAULT_SECTORS {
            Self { sectors: s }
        } else {
            Self::DEFAULT
        }
    }

    /// The size in sectors. C: `store->chunk_size`.
    pub const fn sectors(self) -> u32 {
        self.sectors
    }

    /// The size in bytes. C: `store->chunk_size << SECTOR_SHIFT`.
    pub const fn bytes(self) -> u32 {
        // Cannot overflow: at most 2^21 << 9 = 2^30.
        self.sectors.wrapping_shl(9)
    }

    /// Base-2 logarithm of the size in sectors. C: `store->chunk_shift`.
    pub const fn shift(self) -> u32 {
        self.sectors.trailing_zeros()
    }

    /// The size in sectors minus one. C: `store->chunk_mask`.
    pub const fn mask(self) -> u32 {
        self.sectors.wrapping_sub(1)
    }
}

/// The chunk size the store starts with, before the header is read: the
/// table's, or the default when the table gave 0.
///
/// C: `store->chunk_size` as left by `set_chunk_size()` in
/// dm-exception-store.c, completed by `read_header()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableChunkSize {
    /// The chunk size to use.
    pub chunk_size: ChunkSize,
    /// Whether the table supplied it (C: `chunk_size_supplied`).
    pub supplied: bool,
}

impl TableChunkSize {
    /// Resolves the table's chunk size; 0 means "use the default".
    ///
    /// C: `set_chunk_size()` and the default branch of `read_header()`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidChunkSize`] if a nonzero size breaks a rule (C has
    /// checked it already when the table was parsed).
    pub const fn new(table_sectors: u32, blocks: BlockSizes) -> Result<Self, Error> {
        if table_sectors == 0 {
            return Ok(Self {
                chunk_size: ChunkSize::default_for(blocks.cow),
                supplied: false,
            });
        }
        match ChunkSize::new(table_sectors, blocks) {
            Ok(chunk_size) => Ok(Self {
                chunk_size,
                supplied: true,
            }),
            Err(reason) => Err(Error::InvalidChunkSize {
                chunk_size: table_sectors,
                reason,
            }),
        }
    }

    /// Checks that a COW device of `cow_sectors` holds at least one chunk,
    /// the header chunk, before anything of that size is allocated or read.
    /// No C counterpart.
    ///
    /// # Errors
    ///
    /// [`Error::CowSmallerThanChunk`] if it does not.
    pub fn check_device(self, cow_sectors: u64) -> Result<Self, Error> {
        let chunk_size = self.chunk_size.sectors();
        if cow_sectors < u64::from(chunk_size) {
            return Err(Error::CowSmallerThanChunk {
                chunk_size,
                cow_sectors,
            });
        }
        Ok(self)
    }
}

// ---------------------------------------------------------------------------
// Layout arithmetic
// ---------------------------------------------------------------------------

/// Space accounting reported in the snapshot status line.
///
/// C: the three outputs of `persistent_usage()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Size of the COW device in sectors. C: `*total_sectors`.
    pub total_sectors: u64,
    /// `next_free * chunk_size`. C: `*sectors_allocated`.
    pub sectors_allocated: u64,
    /// `(current_area + 2) * chunk_size`: the header plus every area up to
    /// the current one. C: `*metadata_sectors`.
    pub metadata_sectors: u64,
}

/// Whole-chunk I/O on one metadata area.
///
/// No C counterpart (C builds a `dm_io_region` in `chunk_io()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AreaIo {
    /// The area index.
    pub area: u64,
    /// The area's chunk (C: `area_location()`).
    pub chunk: u64,
    /// First sector of the chunk.
    pub sector: u64,
    /// Sectors in the chunk.
    pub sectors: u32,
}

/// A partial write of the in-memory area: the bytes `offset..offset+len`
/// of the area buffer go to `sector..sector+sectors` of the COW device.
///
/// No C counterpart (C writes the whole chunk in `area_io()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AreaWrite {
    /// The area index.
    pub area: u64,
    /// The area's chunk.
    pub chunk: u64,
    /// Byte offset of the write inside the area buffer (block aligned).
    pub offset: u32,
    /// Bytes to write (a nonzero multiple of the write block size).
    pub len: u32,
    /// First sector written on the COW device.
    pub sector: u64,
    /// Sectors written.
    pub sectors: u32,
}

impl AreaWrite {
    /// The byte range of the area buffer to write. No C counterpart.
    pub fn range(&self) -> Option<Range<usize>> {
        let start = usize_of(self.offset)?;
        let end = start.checked_add(usize_of(self.len)?)?;
        Some(start..end)
    }

    /// The bytes of `area` to write. No C counterpart.
    pub fn bytes<'a>(&self, area: &'a [u8]) -> Option<&'a [u8]> {
        area.get(self.range()?)
    }
}

/// Geometry of a persistent store for one chunk size.
///
/// C: the `exceptions_per_area` field of `struct pstore` plus the helpers
/// that use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    chunk_size: ChunkSize,
}

impl Layout {
    /// The layout for a chunk size.
    ///
    /// C: the `exceptions_per_area` computation in
    /// `persistent_read_metadata()`.
    pub const fn new(chunk_size: ChunkSize) -> Self {
        Self { chunk_size }
    }

    /// The chunk size. C: `store->chunk_size`.
    pub const fn chunk_size(self) -> ChunkSize {
        self.chunk_size
    }

    /// Chunk size in sectors. C: `store->chunk_size`.
    pub const fn chunk_sectors(self) -> u32 {
        self.chunk_size.sectors()
    }

    /// Chunk size in bytes; also the size of every area buffer.
    /// C: `store->chunk_size << SECTOR_SHIFT`.
    pub const fn chunk_bytes(self) -> u32 {
        self.chunk_size.bytes()
    }

    /// Exception records in one area: `chunk_bytes / 16`, at least 32.
    ///
    /// C: `ps->exceptions_per_area`.
    pub const fn exceptions_per_area(self) -> u32 {
        self.chunk_size.bytes().wrapping_shr(4)
    }

    /// Distance in chunks between two metadata areas:
    /// `exceptions_per_area + 1`.
    ///
    /// C: `stride` in `skip_metadata()`.
    pub fn stride(self) -> u64 {
        // At most 2^26 + 1: cannot overflow.
        u64::from(self.exceptions_per_area()).wrapping_add(1)
    }

    /// The chunk of metadata area `area`: `1 + area * stride`.
    ///
    /// C: `area_location()`.
    pub fn area_location(self, area: u64) -> Option<u64> {
        area.checked_mul(self.stride())?
            .checked_add(NUM_SNAPSHOT_HDR_CHUNKS)
    }

    /// Moves `next_free` past a metadata chunk: returns `next_free + 1` when
    /// `next_free % stride == 1`, otherwise `next_free` unchanged. Like C it
    /// tests the remainder, so `next_free == 1` also moves to 2.
    ///
    /// C: `skip_metadata()`.
    pub fn skip_metadata(self, next_free: u64) -> Option<u64> {
        if next_free.checked_rem(self.stride())? == NUM_SNAPSHOT_HDR_CHUNKS {
            next_free.checked_add(1)
        } else {
            Some(next_free)
        }
    }

    /// Whether `chunk` is a header chunk (chunk 0).
    ///
    /// C: `NUM_SNAPSHOT_HDR_CHUNKS`.
    pub const fn is_header_chunk(self, chunk: u64) -> bool {
        chunk < NUM_SNAPSHOT_HDR_CHUNKS
    }

    /// If `chunk` is the chunk of a metadata area, that area's index.
    ///
    /// No C counterpart (inverse of `area_location()`).
    pub fn metadata_area_of(self, chunk: u64) -> Option<u64> {
        let rel = chunk.checked_sub(NUM_SNAPSHOT_HDR_CHUNKS)?;
        let stride = self.stride();
        if rel.checked_rem(stride)? == 0 {
            rel.checked_div(stride)
        } else {
            None
        }
    }

    /// Whether `chunk` is the chunk of a metadata area.
    ///
    /// No C counterpart.
    pub fn is_metadata_chunk(self, chunk: u64) -> bool {
        self.metadata_area_of(chunk).is_some()
    }

    /// Whether `chunk` may hold exception data: neither the header nor a
    /// metadata area.
    ///
    /// No C counterpart.
    pub fn is_data_chunk(self, chunk: u64) -> bool {
        !self.is_header_chunk(chunk) && !self.is_metadata_chunk(chunk)
    }

    /// The area whose stretch of the device contains `chunk`: its metadata
    /// chunk and the `exceptions_per_area` data chunks after it. `None` for
    /// the header.
    ///
    /// No C counterpart.
    pub fn area_of_chunk(self, chunk: u64) -> Option<u64> {
        chunk
            .checked_sub(NUM_SNAPSHOT_HDR_CHUNKS)?
            .checked_div(self.stride())
    }

    /// First sector of `chunk`. C: `chunk_to_sector()` in dm-snap.c.
    pub fn chunk_to_sector(self, chunk: u64) -> Option<u64> {
        chunk.checked_mul(u64::from(self.chunk_sectors()))
    }

    /// The chunk holding `sector`. C: `sector_to_chunk()`.
    pub const fn sector_to_chunk(self, sector: u64) -> u64 {
        sector.wrapping_shr(self.chunk_size.shift())
    }

    /// Whole chunks on a device of `sectors` sectors (a partial last chunk
    /// is not usable, as in C's `-ENOSPC` test).
    ///
    /// C: `dm_bufio_get_device_size()` for a chunk-sized bufio client.
    pub const fn device_chunks(self, sectors: u64) -> u64 {
        self.sector_to_chunk(sectors)
    }

    /// Metadata areas whose chunk lies on a device of `sectors` sectors.
    ///
    /// No C counterpart.
    pub fn device_areas(self, sectors: u64) -> u64 {
        match self
            .device_chunks(sectors)
            .checked_sub(NUM_SNAPSHOT_HDR_CHUNKS)
        {
            Some(rest) => rest.div_ceil(self.stride()),
            None => 0,
        }
    }

    /// Largest `old_chunk` accepted from disk: a chunk whose last sector
    /// lies within [`MAX_DEVICE_SECTORS`], and at most
    /// [`DM_CHUNK_NUMBER_MAX`].
    ///
    /// No C counterpart.
    pub fn max_old_chunk(self) -> u64 {
        let whole = MAX_DEVICE_SECTORS
            .checked_div(u64::from(self.chunk_sectors()))
            .unwrap_or(0);
        whole.saturating_sub(1).min(DM_CHUNK_NUMBER_MAX)
    }

    /// Usage figures exactly as C computes them.
    ///
    /// C: `persistent_usage()`.
    pub fn usage(self, next_free: u64, current_area: u64, cow_sectors: u64) -> Option<Usage> {
        let cs = u64::from(self.chunk_sectors());
        Some(Usage {
            total_sectors: cow_sectors,
            sectors_allocated: next_free.checked_mul(cs)?,
            metadata_sectors: current_area
                .checked_add(1)?
                .checked_add(NUM_SNAPSHOT_HDR_CHUNKS)?
                .checked_mul(cs)?,
        })
    }

    /// Whole-chunk I/O description of area `area`.
    ///
    /// C: the region built by `area_io()` / `zero_disk_area()`.
    pub fn area_io(self, area: u64) -> Option<AreaIo> {
        let chunk = self.area_location(area)?;
        Some(AreaIo {
            area,
            chunk,
            sector: self.chunk_to_sector(chunk)?,
            sectors: self.chunk_sectors(),
        })
    }

    /// The value of `next_free` after a scan whose largest `new_chunk` was
    /// `max_new_chunk` (`None` if the store is empty): C starts from
    /// [`INITIAL_NEXT_FREE`], raises it to `new_chunk + 1`, then applies
    /// [`Layout::skip_metadata`] once.
    ///
    /// C: `insert_exceptions()` and the end of `read_exceptions()`.
    pub fn next_free_after_scan(self, max_new_chunk: Option<u64>) -> Option<u64> {
        let raised = match max_new_chunk {
            Some(c) => max(INITIAL_NEXT_FREE, c.checked_add(1)?),
            None => INITIAL_NEXT_FREE,
        };
        self.skip_metadata(raised)
    }

    fn check_area_len(self, len: usize) -> Result<(), Error> {
        let expected = u64::from(self.chunk_bytes());
        let actual = u64::try_from(len).map_err(|_| Error::Overflow)?;
        if actual == expected {
            Ok(())
        } else {
            Err(Error::BufferSize { expected, actual })
        }
    }

    /// Checks that every record of `area`, the bytes of full area
    /// `area_index` read back for merging, is a valid exception on a COW
    /// device of `cow_sectors` sectors (it was full when written, so no
    /// record may be an end marker). O(chunk): call it outside the lock
    /// that guards the [`Pstore`].
    ///
    /// No C check (C merges whatever it reads).
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`], [`Error::UnexpectedEndMarker`] or a
    /// validation error of [`Layout::check_exception`].
    pub fn check_full_area(
        self,
        area_index: u64,
        area: &[u8],
        cow_sectors: u64,
    ) -> Result<CheckedArea, Error> {
        self.check_area_len(area.len())?;
        let cow_chunks = self.device_chunks(cow_sectors);
        for index in 0..self.exceptions_per_area() {
            let e = read_exception(area, index).ok_or(Error::Overflow)?;
            if e.is_end_marker() {
                return Err(Error::UnexpectedEndMarker {
                    area: area_index,
                    index,
                });
            }
            self.check_exception(area_index, index, e, Some(cow_chunks))?;
        }
        Ok(CheckedArea { area: area_index })
    }

    /// Checks one exception found (or about to be stored) at `index` of
    /// `area` against the validation rules.
    ///
    /// No C counterpart: see [`Scan`] for the rules.
    ///
    /// # Errors
    ///
    /// The variant of the first rule broken.
    pub fn check_exception(
        self,
        area: u64,
        index: u32,
        e: Exception,
        cow_chunks: Option<u64>,
    ) -> Result<(), Error> {
        if e.new_chunk == 0 {
            return Err(Error::NewChunkIsHeader { area, index });
        }
        if let Some(cow_chunks) = cow_chunks {
            if e.new_chunk >= cow_chunks {
                return Err(Error::NewChunkBeyondDevice {
                    area,
                    index,
                    new_chunk: e.new_chunk,
                    cow_chunks,
                });
            }
        }
        if let Some(metadata_area) = self.metadata_area_of(e.new_chunk) {
            return Err(Error::NewChunkIsMetadata {
                area,
                index,
                new_chunk: e.new_chunk,
                metadata_area,
            });
        }
        let max = self.max_old_chunk();
        if e.old_chunk > max {
            return Err(Error::OldChunkTooLarge {
                area,
                index,
                old_chunk: e.old_chunk,
                max,
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// On-disk records
// ---------------------------------------------------------------------------

/// The on-disk header, field by field, as raw values.
///
/// C: `struct disk_header`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiskHeader {
    /// [`SNAP_MAGIC`], or 0 on a fresh device. C: `magic`.
    pub magic: u32,
    /// Nonzero while the snapshot is valid. C: `valid`.
    pub valid: u32,
    /// [`SNAPSHOT_DISK_VERSION`]. C: `version`.
    pub version: u32,
    /// Chunk size in sectors. C: `chunk_size`.
    pub chunk_size: u32,
}

impl DiskHeader {
    /// The header this store writes.
    ///
    /// C: the fields set by `write_header()`.
    pub const fn new(valid: bool, chunk_size: ChunkSize) -> Self {
        Self {
            magic: SNAP_MAGIC,
            valid: if valid { 1 } else { 0 },
            version: SNAPSHOT_DISK_VERSION,
            chunk_size: chunk_size.sectors(),
        }
    }

    /// Decodes the first 16 bytes of `bytes`.
    ///
    /// C: the `le32_to_cpu()` reads in `read_header()`.
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`] if `bytes` is shorter than 16 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let short = Error::BufferSize {
            expected: 16,
            actual: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
        };
        Ok(Self {
            magic: le32(bytes, 0).ok_or(short)?,
            valid: le32(bytes, 4).ok_or(short)?,
            version: le32(bytes, 8).ok_or(short)?,
            chunk_size: le32(bytes, 12).ok_or(short)?,
        })
    }

    /// Encodes the header at the start of `buf` and zeroes the rest of it
    /// (pass the whole header chunk).
    ///
    /// C: `write_header()` before its I/O.
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`] if `buf` is shorter than 16 bytes; `buf` is
    /// then left untouched.
    pub fn encode(&self, buf: &mut [u8]) -> Result<(), Error> {
        if buf.len() < DISK_HEADER_SIZE {
            return Err(Error::BufferSize {
                expected: 16,
                actual: u64::try_from(buf.len()).unwrap_or(u64::MAX),
            });
        }
        buf.fill(0);
        let fields = [self.magic, self.valid, self.version, self.chunk_size];
        for (slot, v) in buf.chunks_exact_mut(4).zip(fields) {
            slot.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    /// The version as C prints it (`%d` of an `int`).
    pub const fn version_as_int(&self) -> i32 {
        i32::from_le_bytes(self.version.to_le_bytes())
    }
}

/// One exception: `old_chunk` of the origin is saved in `new_chunk` of the
/// COW device.
///
/// C: `struct core_exception` (and `struct disk_exception` on disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Exception {
    /// Chunk of the origin. C: `old_chunk`.
    pub old_chunk: u64,
    /// Chunk of the COW device. C: `new_chunk`.
    pub new_chunk: u64,
}

impl Exception {
    /// Decodes a 16-byte record.
    ///
    /// C: `read_exception()`.
    pub fn decode(record: &[u8; DISK_EXCEPTION_SIZE]) -> Self {
        // Both reads are inside the 16-byte array; the fallbacks are dead.
        Self {
            old_chunk: le64(record, 0).unwrap_or(0),
            new_chunk: le64(record, 8).unwrap_or(0),
        }
    }

    /// Encodes as a 16-byte record.
    ///
    /// C: `write_exception()`.
    pub fn encode(&self) -> [u8; DISK_EXCEPTION_SIZE] {
        let mut out = [0u8; DISK_EXCEPTION_SIZE];
        let (old, new) = (self.old_chunk.to_le_bytes(), self.new_chunk.to_le_bytes());
        for (dst, src) in out.iter_mut().zip(old.iter().chain(new.iter())) {
            *dst = *src;
        }
        out
    }

    /// Whether this record ends an area (`new_chunk == 0`).
    ///
    /// C: the `e.new_chunk == 0LL` test in `insert_exceptions()`.
    pub const fn is_end_marker(&self) -> bool {
        self.new_chunk == 0
    }
}

/// Reads exception `index` of an area buffer; `None` if the record lies
/// outside `area`.
///
/// C: `read_exception()`.
pub fn read_exception(area: &[u8], index: u32) -> Option<Exception> {
    let at = exception_offset(index)?;
    let end = at.checked_add(DISK_EXCEPTION_SIZE)?;
    let record: &[u8; DISK_EXCEPTION_SIZE] = area.get(at..end)?.try_into().ok()?;
    Some(Exception::decode(record))
}

/// Writes exception `index` of an area buffer; `None` (and nothing
/// written) if the record lies outside `area`.
///
/// C: `write_exception()`.
pub fn write_exception(area: &mut [u8], index: u32, e: Exception) -> Option<()> {
    put(area, exception_offset(index)?, &e.encode())
}

/// Zeroes exception `index` of an area buffer; `None` (and nothing written)
/// if the record lies outside `area`.
///
/// C: `clear_exception()`.
pub fn clear_exception(area: &mut [u8], index: u32) -> Option<()> {
    put(area, exception_offset(index)?, &[0u8; DISK_EXCEPTION_SIZE])
}

// ---------------------------------------------------------------------------
// Activation: header decision
// ---------------------------------------------------------------------------

/// What to do after reading the header.
///
/// C: the outcomes of `read_header()` + `persistent_read_metadata()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderDecision {
    /// Magic 0: a new store. Write [`DiskHeader::new`]`(true, ..)` to chunk
    /// 0, zero area 0 on disk, then build [`Pstore::new_snapshot`].
    New(Layout),
    /// A valid store: scan its areas ([`Scan`] or [`scan_areas`]), then
    /// build [`Pstore::from_scan`].
    Valid(Layout),
    /// A store marked invalid: C returns 1 and dm-snapshot loads it as
    /// invalid. Build [`Pstore::new_invalid`]; nothing is scanned.
    Invalid(Layout),
}

impl HeaderDecision {
    /// The layout, whichever the decision. No C counterpart.
    pub const fn layout(&self) -> Layout {
        match self {
            Self::New(l) | Self::Valid(l) | Self::Invalid(l) => *l,
        }
    }

    /// Checks that a store found on disk fits its COW device of
    /// `cow_sectors`: the header chunk and metadata area 0 lie on it. Call it
    /// before allocating anything of the header's chunk size, which a
    /// hostile header may set far beyond the device. A new store is checked
    /// where area 0 is written. No C counterpart.
    ///
    /// # Errors
    ///
    /// [`Error::OnDiskChunkBeyondDevice`] if they do not fit.
    pub fn check_device(self, cow_sectors: u64) -> Result<Self, Error> {
        match self {
            Self::New(_) => Ok(self),
            Self::Valid(l) | Self::Invalid(l) => {
                if l.device_chunks(cow_sectors) >= 2 {
                    Ok(self)
                } else {
                    Err(Error::OnDiskChunkBeyondDevice {
                        chunk_size: l.chunk_sectors(),
                        cow_sectors,
                    })
                }
            }
        }
    }
}

/// Decides what the header in `header_chunk` (at least its first 16 bytes)
/// means, in C's order: magic 0 is a new store; another wrong magic fails;
/// a differing chunk size on disk wins (with a warning through `warn` if
/// the table supplied one) after passing the chunk-size rules; then the
/// version must be 1; then `valid == 0` gives an invalid snapshot.
///
/// C: `read_header()` and the checks of `persistent_read_metadata()`.
///
/// # Errors
///
/// [`Error::InvalidOrCorrupt`], [`Error::InvalidOnDiskChunkSize`],
/// [`Error::UnsupportedVersion`], or [`Error::BufferSize`] for a buffer
/// shorter than 16 bytes.
pub fn read_header<W: FnMut(Warning)>(
    header_chunk: &[u8],
    table: TableChunkSize,
    blocks: BlockSizes,
    mut warn: W,
) -> Result<HeaderDecision, Error> {
    let dh = DiskHeader::decode(header_chunk)?;
    if dh.magic == 0 {
        return Ok(HeaderDecision::New(Layout::new(table.chunk_size)));
    }
    if dh.magic != SNAP_MAGIC {
        return Err(Error::InvalidOrCorrupt { magic: dh.magic });
    }
    let chunk_size = if dh.chunk_size == table.chunk_size.sectors() {
        table.chunk_size
    } else {
        if table.supplied {
            warn(Warning::ChunkSizeOverride {
                disk: dh.chunk_size,
                table: table.chunk_size.sectors(),
            });
        }
        ChunkSize::new(dh.chunk_size, blocks).map_err(|reason| Error::InvalidOnDiskChunkSize {
            chunk_size: dh.chunk_size,
            reason,
        })?
    };
    if dh.version != SNAPSHOT_DISK_VERSION {
        return Err(Error::UnsupportedVersion {
            version: dh.version_as_int(),
        });
    }
    let layout = Layout::new(chunk_size);
    if dh.valid == 0 {
        Ok(HeaderDecision::Invalid(layout))
    } else {
        Ok(HeaderDecision::Valid(layout))
    }
}

// ---------------------------------------------------------------------------
// Activation: area scan
// ---------------------------------------------------------------------------

/// What one scanned area turned out to be.
///
/// C: the `full` output of `insert_exceptions()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AreaFill {
    /// No end marker: every record is an exception; the scan goes on.
    Full,
    /// An end marker at index `committed`: the scan is over.
    Partial {
        /// Exceptions before the marker (C: `current_committed`).
        committed: u32,
    },
}

/// The outcome of a finished scan.
///
/// C: the `struct pstore` fields set by `read_exceptions()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScanResult {
    /// Index of the last, partial area. C: `current_area`.
    pub current_area: u64,
    /// Exceptions in that area. C: `current_committed`.
    pub current_committed: u32,
    /// Next chunk to allocate. C: `next_free`.
    pub next_free: u64,
    /// Exceptions reported to the visitor.
    pub exceptions: u64,
    /// Nonzero records after the end marker, if any.
    pub warning: Option<Warning>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ScanPhase {
    Reading,
    Done {
        committed: u32,
        warning: Option<Warning>,
    },
}

/// The validating activation scan over the metadata areas.
///
/// C: `read_exceptions()` and `insert_exceptions()`.
///
/// Drive it with [`Scan::next_area`] (which chunk to read next),
/// [`Scan::next_prefetch`] (optional read-ahead) and [`Scan::scan_area`]
/// (hand over the bytes read), then [`Scan::finish`]. [`scan_areas`] does
/// this loop for callers that can read into a buffer.
///
/// # Validation rules
///
/// The metadata is untrusted. Each exception before the end marker must
/// pass these rules; the first broken one stops the scan with its error.
///
/// | rule | C checks it | this store |
/// |---|---|---|
/// | `new_chunk` is the header chunk | no (0 is the end marker, so no record can point at the header) | impossible on disk; [`Error::NewChunkIsHeader`] guards commits |
/// | `new_chunk` is a metadata-area chunk | no | [`Error::NewChunkIsMetadata`] |
/// | `new_chunk` at/after the end of the COW device (whole chunks), which also covers values of 2^56 and above that would corrupt dm's consecutive-chunk count | no | [`Error::NewChunkBeyondDevice`] |
/// | `old_chunk` past the largest possible block device (2^63-1 bytes) or past 56 bits | no | [`Error::OldChunkTooLarge`] |
/// | an area to read lies beyond the device end (previous area full) | no (its read fails) | [`Error::AreaBeyondDevice`] before any read |
/// | nonzero bytes in/after the end-marker record | no (ignored) | ignored as in C, reported as [`Warning::GarbageAfterEndMarker`], cleared by [`Pstore::from_scan`] and written back at activation ([`Pstore::cleanup_write`]) so that no later crash can revive them |
/// | duplicate `new_chunk` | no | [`Error::DuplicateNewChunk`], found by the caller with [`ChunkBits`] (one bit per chunk up to the highest `new_chunk`) and named with [`find_new_chunk`] |
/// | duplicate `old_chunk` | no | not checked: dm-snapshot's hash table keeps the last one, as with C |
/// | `new_chunk` outside the stretch of its own area | no | not checked: stores written by old kernels committed out of order |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    layout: Layout,
    cow_chunks: u64,
    current_area: u64,
    prefetch_area: u64,
    max_new_chunk: Option<u64>,
    exceptions: u64,
    phase: ScanPhase,
}

impl Scan {
    /// Starts a scan of a COW device of `cow_sectors` sectors.
    ///
    /// C: the start of `read_exceptions()` (`ps->current_area = 0`).
    pub const fn new(layout: Layout, cow_sectors: u64) -> Self {
        Self {
            layout,
            cow_chunks: layout.device_chunks(cow_sectors),
            current_area: 0,
            prefetch_area: 0,
            max_new_chunk: None,
            exceptions: 0,
            phase: ScanPhase::Reading,
        }
    }

    /// The area to read next, or `None` once a partial area was found.
    ///
    /// C: the loop condition of `read_exceptions()` and its
    /// `area_location()` call.
    ///
    /// # Errors
    ///
    /// [`Error::AreaBeyondDevice`] if the area does not lie on the device.
    pub fn next_area(&self) -> Result<Option<AreaIo>, Error> {
        if matches!(self.phase, ScanPhase::Done { .. }) {
            return Ok(None);
        }
        let io = self
            .layout
            .area_io(self.current_area)
            .ok_or(Error::Overflow)?;
        if io.chunk >= self.cow_chunks {
            return Err(Error::AreaBeyondDevice {
                area: io.area,
                chunk: io.chunk,
                cow_chunks: self.cow_chunks,
            });
        }
        Ok(Some(io))
    }

    /// The next chunk to prefetch before reading the current area, or
    /// `None` when the read-ahead window (current area plus
    /// [`DM_PREFETCH_CHUNKS`]) is covered or reaches the device end. Call it
    /// in a loop before each [`Scan::scan_area`].
    ///
    /// C: the `dm_bufio_prefetch()` loop of `read_exceptions()`.
    pub fn next_prefetch(&mut self) -> Option<u64> {
        if matches!(self.phase, ScanPhase::Done { .. }) {
            return None;
        }
        self.prefetch_area = max(self.prefetch_area, self.current_area);
        if self.prefetch_area > self.current_area.saturating_add(DM_PREFETCH_CHUNKS) {
            return None;
        }
        let chunk = self.layout.area_location(self.prefetch_area)?;
        if chunk >= self.cow_chunks {
            return None;
        }
        self.prefetch_area = self.prefetch_area.checked_add(1)?;
        Some(chunk)
    }

    /// Scans the bytes of the area named by [`Scan::next_area`], calling
    /// `visit` for each exception before the end marker, in order. A visit
    /// error stops the scan (C: the callback's return value).
    ///
    /// # Errors
    ///
    /// A validation error (see [`Scan`]), [`Error::Callback`],
    /// [`Error::BufferSize`] if `area` is not one chunk, or
    /// [`Error::ScanState`] after the scan finished.
    pub fn scan_area<V>(&mut self, area: &[u8], mut visit: V) -> Result<AreaFill, Error>
    where
        V: FnMut(Exception) -> Result<(), i32>,
    {
        if self.next_area()?.is_none() {
            return Err(Error::ScanState);
        }
        self.layout.check_area_len(area.len())?;
        let epa = self.layout.exceptions_per_area();
        // Records by index rather than `chunks_exact()`, whose length
        // division leaves a panic call that objtool (7.3) does not know as
        // noreturn in the kernel build.
        for index in 0..epa {
            let e = read_exception(area, index).ok_or(Error::Overflow)?;
            if e.is_end_marker() {
                let warning = garbage_after(area, self.current_area, index);
                self.phase = ScanPhase::Done {
                    committed: index,
                    warning,
                };
                return Ok(AreaFill::Partial { committed: index });
            }
            self.layout
                .check_exception(self.current_area, index, e, Some(self.cow_chunks))?;
            self.max_new_chunk = Some(max(self.max_new_chunk.unwrap_or(0), e.new_chunk));
            self.exceptions = self.exceptions.saturating_add(1);
            visit(e).map_err(|errno| Error::Callback { errno })?;
        }
        self.current_area = self.current_area.checked_add(1).ok_or(Error::Overflow)?;
        Ok(AreaFill::Full)
    }

    /// The result of a scan that found its partial area.
    ///
    /// C: the end of `read_exceptions()` (`current_area--`,
    /// `skip_metadata()`).
    ///
    /// # Errors
    ///
    /// [`Error::ScanState`] if the scan has not finished.
    pub fn finish(&self) -> Result<ScanResult, Error> {
        match self.phase {
            ScanPhase::Reading => Err(Error::ScanState),
            ScanPhase::Done { committed, warning } => Ok(ScanResult {
                current_area: self.current_area,
                current_committed: committed,
                next_free: self
                    .layout
                    .next_free_after_scan(self.max_new_chunk)
                    .ok_or(Error::Overflow)?,
                exceptions: self.exceptions,
                warning,
            }),
        }
    }
}

/// Looks for nonzero records from index `end` (the end marker) on.
fn garbage_after(area: &[u8], area_index: u64, end: u32) -> Option<Warning> {
    let mut first = None;
    let mut records = 0u32;
    let mut index = end;
    while let Some(e) = read_exception(area, index) {
        if e != Exception::default() {
            first = first.or(Some(index));
            records = records.saturating_add(1);
        }
        index = index.checked_add(1)?;
    }
    Some(Warning::GarbageAfterEndMarker {
        area: area_index,
        end,
        first: first?,
        records,
    })
}

/// Runs a whole activation scan, reading each area into `area` with
/// `read_chunk(chunk, buf)` and forwarding exceptions to `visit`. On
/// success `area` holds the last, partial area, ready for
/// [`Pstore::from_scan`].
///
/// C: `read_exceptions()` (without the read-ahead).
///
/// # Errors
///
/// [`Error::ReadFailed`] with the errno `read_chunk` returned, or any error
/// of [`Scan::next_area`] and [`Scan::scan_area`].
pub fn scan_areas<R, V>(
    layout: Layout,
    cow_sectors: u64,
    area: &mut [u8],
    mut read_chunk: R,
    mut visit: V,
) -> Result<ScanResult, Error>
where
    R: FnMut(u64, &mut [u8]) -> Result<(), i32>,
    V: FnMut(Exception) -> Result<(), i32>,
{
    layout.check_area_len(area.len())?;
    let mut scan = Scan::new(layout, cow_sectors);
    while let Some(io) = scan.next_area()? {
        read_chunk(io.chunk, area).map_err(|errno| Error::ReadFailed {
            chunk: io.chunk,
            errno,
        })?;
        scan.scan_area(area, &mut visit)?;
    }
    scan.finish()
}

// ---------------------------------------------------------------------------
// Duplicate new_chunk detection
// ---------------------------------------------------------------------------

/// A set of chunks, one bit per chunk, over words the caller owns (and
/// grows: [`ChunkBits::words_for`] says how many a chunk needs). The
/// activation scan uses it to refuse two exceptions sharing one COW chunk,
/// with memory bounded by one bit per chunk up to the highest `new_chunk`.
///
/// No C counterpart (C accepts such a store, and one snapshot chunk then
/// shows another's data).
pub struct ChunkBits<'a> {
    words: &'a mut [u64],
}

impl<'a> ChunkBits<'a> {
    /// The set over `words` (zeroed by the caller for an empty set).
    pub fn new(words: &'a mut [u64]) -> Self {
        Self { words }
    }

    /// Words needed to hold `chunk`.
    pub fn words_for(chunk: u64) -> Option<usize> {
        usize::try_from(chunk.wrapping_shr(6).checked_add(1)?).ok()
    }

    /// Adds `chunk`; `Some(false)` if it was there already, `None` if the
    /// words are too few.
    pub fn insert(&mut self, chunk: u64) -> Option<bool> {
        let word = usize::try_from(chunk.wrapping_shr(6)).ok()?;
        let bit = 1u64.wrapping_shl(u32::try_from(chunk & 63).ok()?);
        let w = self.words.get_mut(word)?;
        let fresh = *w & bit == 0;
        *w |= bit;
        Some(fresh)
    }
}

/// The index of the first record of `area` (up to its end marker) whose
/// `new_chunk` is `chunk`; used to name the first of two records that
/// share a chunk.
pub fn find_new_chunk(area: &[u8], chunk: u64) -> Option<u32> {
    let mut index = 0u32;
    while let Some(e) = read_exception(area, index) {
        if e.is_end_marker() {
            return None;
        }
        if e.new_chunk == chunk {
            return Some(index);
        }
        index = index.checked_add(1)?;
    }
    None
}

// ---------------------------------------------------------------------------
// Store state: prepare / commit / merge
// ---------------------------------------------------------------------------

/// What the caller must do next while committing exceptions.
///
/// No C counterpart: C performs these steps inline in
/// `persistent_commit_exception()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommitStep {
    /// The exception is recorded in memory; other exceptions are still in
    /// flight and the area is not full, so its callback waits.
    Queued,
    /// The area just filled: write zeros over the whole next area (plain
    /// `REQ_OP_WRITE`), then call [`Pstore::commit_io_done`] with the
    /// outcome. C: `zero_disk_area(ps, ps->current_area + 1)`.
    ZeroNextArea(AreaIo),
    /// Write these bytes of the area buffer with
    /// `REQ_OP_WRITE | REQ_PREFLUSH | REQ_FUA | REQ_SYNC`, then call
    /// [`Pstore::commit_io_done`] with the outcome. C: `area_io()`.
    WriteArea(AreaWrite),
    /// The flush is over: call the `callbacks` queued callbacks, oldest
    /// first, each with the success value [`Pstore::is_valid`] has at the
    /// time of that call (C reads `ps->valid` per callback, and a callback
    /// may invalidate the store). Hold no store lock while calling them.
    /// `valid` is the value when the flush ended.
    ///
    /// When `clear_area` is set the full area was written and the store
    /// moved to the next one: zero the area buffer before the next call
    /// that takes it. The store leaves that O(chunk) work to the caller so
    /// that it can be done outside the lock that guards the `Pstore`.
    Complete {
        /// Callbacks to call.
        callbacks: u32,
        /// [`Pstore::is_valid`] when the flush ended.
        valid: bool,
        /// The area buffer must be zeroed: the store moved to the next area.
        clear_area: bool,
    },
    /// The exception could not be recorded: it would not read back as a
    /// valid exception (`error` says why; log it). The store is now invalid
    /// and the exception's callback is queued like any other. Call
    /// `callbacks` queued callbacks now, as for [`CommitStep::Complete`]:
    /// 0 while other exceptions are still pending (the last of them ends
    /// the flush), else all of them.
    ///
    /// C records whatever it is given.
    Refused {
        /// Why the exception was refused.
        error: Error,
        /// Callbacks to call now.
        callbacks: u32,
    },
}

/// What `prepare_merge` asks for.
///
/// C: the outcomes of `persistent_prepare_merge()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrepareMerge {
    /// Nothing left to merge (C returns 0).
    Done,
    /// Read this previous area into the area buffer, check it with
    /// [`Layout::check_full_area`], then call [`Pstore::merge_area_read`].
    /// C: `area_io(ps, REQ_OP_READ)`.
    ReadArea(AreaIo),
    /// Find the run in the area buffer with [`RunQuery::find`], then
    /// report it with [`Pstore::merge_run_found`].
    FindRun(RunQuery),
}

/// Where the next run to merge ends: the in-memory area and the number of
/// exceptions it holds. Finding the run reads up to a whole area, so the
/// caller does it outside the lock that guards the [`Pstore`].
///
/// C: the loop of `persistent_prepare_merge()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RunQuery {
    layout: Layout,
    area: u64,
    committed: u32,
}

impl RunQuery {
    /// The run of exceptions ending with the last one of `area` (the
    /// in-memory area buffer), newest first.
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`]; [`Error::MergeState`] on an empty area; a
    /// validation error if the last exception is not a valid exception.
    pub fn find(&self, area: &[u8]) -> Result<MergeRun, Error> {
        self.layout.check_area_len(area.len())?;
        let cc = self.committed;
        let last_index = cc.checked_sub(1).ok_or(Error::MergeState)?;
        let last = read_exception(area, last_index).ok_or(Error::IndexOutOfArea {
            index: last_index,
            exceptions_per_area: self.layout.exceptions_per_area(),
        })?;
        if last.is_end_marker() {
            return Err(Error::UnexpectedEndMarker {
                area: self.area,
                index: last_index,
            });
        }
        self.layout
            .check_exception(self.area, last_index, last, None)?;
        let mut count: u32 = 1;
        while count < cc {
            let index = last_index.wrapping_sub(count);
            let Some(e) = read_exception(area, index) else {
                break;
            };
            let step = u64::from(count);
            if last.old_chunk.checked_sub(step) != Some(e.old_chunk)
                || last.new_chunk.checked_sub(step) != Some(e.new_chunk)
            {
                break;
            }
            count = count.wrapping_add(1);
        }
        Ok(MergeRun {
            last_old_chunk: last.old_chunk,
            last_new_chunk: last.new_chunk,
            count,
        })
    }
}

/// A previous area read for merging whose records were all checked by
/// [`Layout::check_full_area`]; only that function makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CheckedArea {
    area: u64,
}

/// What [`Pstore::commit_merge`] asks for: zero the bytes `clear` of the
/// area buffer (the merged records), then write `write` of it with
/// `REQ_OP_WRITE | REQ_PREFLUSH | REQ_FUA`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MergeCommit {
    /// Byte range of the area buffer to zero first.
    pub clear: Range<usize>,
    /// The write to do then.
    pub write: AreaWrite,
}

/// A run of exceptions, ending with the most recent one, whose `old_chunk`
/// and `new_chunk` both step by one.
///
/// C: `*last_old_chunk`, `*last_new_chunk` and the return value of
/// `persistent_prepare_merge()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MergeRun {
    /// `old_chunk` of the last exception of the run.
    pub last_old_chunk: u64,
    /// `new_chunk` of the last exception of the run.
    pub last_new_chunk: u64,
    /// Exceptions in the run, at least 1.
    pub count: u32,
}

impl MergeRun {
    /// `old_chunk` of the first exception of the run.
    ///
    /// C: `old_chunk + 1 - linear_chunks` in dm-snap.c's
    /// `snapshot_merge_next_chunks()`.
    pub fn first_old_chunk(&self) -> Option<u64> {
        self.last_old_chunk
            .checked_add(1)?
            .checked_sub(u64::from(self.count))
    }

    /// `new_chunk` of the first exception of the run.
    ///
    /// C: `new_chunk + 1 - linear_chunks` in dm-snap.c's
    /// `snapshot_merge_next_chunks()`.
    pub fn first_new_chunk(&self) -> Option<u64> {
        self.last_new_chunk
            .checked_add(1)?
            .checked_sub(u64::from(self.count))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum FlushPhase {
    Idle,
    ZeroingNext,
    Writing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum MergePhase {
    Idle,
    Reading,
    Finding,
    Prepared { count: u32 },
    Committing { nr_merged: u32 },
    Failed,
}

/// Byte range `[start, end)` of the area buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Dirty {
    start: u32,
    end: u32,
}

/// The state of a persistent store, without its buffers or I/O.
///
/// C: `struct pstore` (the fields `valid`, `version`, `current_area`,
/// `next_free`, `current_committed`, `pending_count`, `callback_count`).
///
/// The in-memory metadata area (one chunk, C: `ps->area`) belongs to the
/// caller and is passed to the methods that touch it. The caller keeps its
/// own array of queued callbacks (C: `ps->callbacks`, sized
/// `exceptions_per_area`); [`Pstore::callback_count`] never exceeds that.
///
/// # Dirty ranges and crash safety
///
/// C rewrites the whole area chunk on every commit. This store writes only
/// the logical blocks touched since the last successful write. The on-disk
/// result and the crash guarantees are the same because:
///
/// - Invariant: outside the dirty range, the area on disk equals the area
///   in memory. It holds at creation (a new store's area 0 is zeroed on
///   disk by the caller, a scanned area is a copy of the disk except for
///   cleared garbage, which is marked dirty; an invalid store is all dirty),
///   after a successful write (which wrote the whole dirty range), after a
///   failed write (which touched only dirty blocks, still dirty), and after
///   moving to the next area (zeroed on disk by a whole-chunk write first;
///   if that failed, the new area is all dirty).
/// - Hence a whole-chunk write would store the same bytes: the blocks we
///   skip already hold them.
/// - A crash during C's write can leave any mix of old and new sectors of
///   the chunk; during ours, any mix of old and new sectors of the dirty
///   blocks, with the others already equal to new. Every state ours can
///   leave, C's could too.
/// - The write keeps `REQ_PREFLUSH | REQ_FUA`: data chunks copied before it
///   are durable first, and completion means the metadata is durable.
/// - The dirty range is cleared only after a successful write.
///
/// Pass the area's chunk size as the write block to get C's whole-chunk
/// writes.
///
/// # Locking
///
/// The C store relies on dm-snapshot's locks: `prepare_exception` runs
/// under a spinlock, commits are serialized, `usage` runs under the
/// snapshot lock, and callbacks may re-enter `prepare_exception` and
/// `drop_snapshot`. Keep a `Pstore` behind one spinlock, release it around
/// I/O and callbacks, and serialize the commit path (it owns the area
/// buffer). Every method is O(1) except the constructors, which clear or
/// scan an area: the O(chunk) work of the commit and merge paths
/// (zeroing the buffer for the next area, checking an area read back,
/// finding a run, clearing merged records) is left to the caller
/// ([`CommitStep::Complete`], [`Layout::check_full_area`], [`RunQuery`],
/// [`MergeCommit`]), to be done outside the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pstore {
    layout: Layout,
    write_block: LogicalBlockSize,
    valid: bool,
    next_free: u64,
    current_area: u64,
    current_committed: u32,
    pending_count: u32,
    callback_count: u32,
    dirty: Option<Dirty>,
    flush: FlushPhase,
    merge: MergePhase,
}

impl Pstore {
    fn with(
        layout: Layout,
        write_block: LogicalBlockSize,
        area: &[u8],
        valid: bool,
    ) -> Result<Self, Error> {
        layout.check_area_len(area.len())?;
        if write_block.bytes() > layout.chunk_bytes() {
            return Err(Error::InvalidBlockSize {
                bytes: write_block.bytes(),
            });
        }
        Ok(Self {
            layout,
            write_block,
            valid,
            next_free: INITIAL_NEXT_FREE,
            current_area: 0,
            current_committed: 0,
            pending_count: 0,
            callback_count: 0,
            dirty: None,
            flush: FlushPhase::Idle,
            merge: MergePhase::Idle,
        })
    }

    /// A new, empty, valid store. Zeroes `area` (one chunk). The caller has
    /// written the header and zeroed area 0 on disk (C does both right
    /// before).
    ///
    /// C: `persistent_ctr()` + the `new_snapshot` branch of
    /// `persistent_read_metadata()`.
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`] if `area` is not one chunk;
    /// [`Error::InvalidBlockSize`] if `write_block` exceeds the chunk.
    pub fn new_snapshot(
        layout: Layout,
        write_block: LogicalBlockSize,
        area: &mut [u8],
    ) -> Result<Self, Error> {
        let s = Self::with(layout, write_block, area, true)?;
        area.fill(0);
        Ok(s)
    }

    /// A store whose header says it is invalid. Zeroes `area`; no area is
    /// ever written while invalid, and the disk content is unknown, so the
    /// whole area counts as dirty.
    ///
    /// C: `persistent_ctr()` + `persistent_read_metadata()` returning 1.
    ///
    /// # Errors
    ///
    /// As [`Pstore::new_snapshot`].
    pub fn new_invalid(
        layout: Layout,
        write_block: LogicalBlockSize,
        area: &mut [u8],
    ) -> Result<Self, Error> {
        let mut s = Self::with(layout, write_block, area, false)?;
        area.fill(0);
        s.dirty = Some(s.whole_area());
        Ok(s)
    }

    /// The store after a successful scan. `area` must hold the bytes of the
    /// last, partial area (C: the `memcpy` into `ps->area`). Records at and
    /// after the end marker are zeroed and marked dirty (see
    /// [`Warning::GarbageAfterEndMarker`]).
    ///
    /// C: the state left by `read_exceptions()`.
    ///
    /// # Errors
    ///
    /// As [`Pstore::new_snapshot`], or [`Error::IndexOutOfArea`] if
    /// `scan.current_committed` is not below `exceptions_per_area`.
    pub fn from_scan(
        layout: Layout,
        write_block: LogicalBlockSize,
        scan: &ScanResult,
        area: &mut [u8],
    ) -> Result<Self, Error> {
        let mut s = Self::with(layout, write_block, area, true)?;
        let epa = layout.exceptions_per_area();
        if scan.current_committed >= epa {
            return Err(Error::IndexOutOfArea {
                index: scan.current_committed,
                exceptions_per_area: epa,
            });
        }
        s.current_area = scan.current_area;
        s.current_committed = scan.current_committed;
        s.next_free = scan.next_free;
        for index in scan.current_committed..epa {
            if read_exception(area, index) != Some(Exception::default()) {
                clear_exception(area, index).ok_or(Error::Overflow)?;
                s.mark_dirty(index)?;
            }
        }
        Ok(s)
    }

    /// The write that makes durable the garbage [`Pstore::from_scan`]
    /// cleared after the end marker, or `None` if it cleared none (or the
    /// store is invalid, and then never writes its area). Do it with
    /// `REQ_PREFLUSH | REQ_FUA` before the store is used, and report
    /// success with [`Pstore::cleanup_done`]: a record left on disk could
    /// otherwise come back after a torn commit, once its chunk was
    /// allocated again.
    ///
    /// No C counterpart (C leaves the garbage on disk).
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`] if the write does not fit the arithmetic.
    pub fn cleanup_write(&self) -> Result<Option<AreaWrite>, Error> {
        if !self.valid || self.dirty.is_none() || self.flush != FlushPhase::Idle {
            return Ok(None);
        }
        self.area_write().map(Some)
    }

    /// The [`Pstore::cleanup_write`] succeeded: the area on disk equals the
    /// area in memory.
    pub fn cleanup_done(&mut self) {
        if self.flush == FlushPhase::Idle && self.merge == MergePhase::Idle {
            self.dirty = None;
        }
    }

    fn whole_area(&self) -> Dirty {
        Dirty {
            start: 0,
            end: self.layout.chunk_bytes(),
        }
    }

    fn mark_dirty(&mut self, index: u32) -> Result<(), Error> {
        let start = index.checked_mul(16).ok_or(Error::Overflow)?;
        let end = start.checked_add(16).ok_or(Error::Overflow)?;
        self.dirty = Some(match self.dirty {
            None => Dirty { start, end },
            Some(d) => Dirty {
                start: d.start.min(start),
                end: d.end.max(end),
            },
        });
        Ok(())
    }

    fn area_write(&self) -> Result<AreaWrite, Error> {
        let d = self.dirty.unwrap_or(self.whole_area());
        let block = self.write_block.bytes();
        let mask = block.wrapping_sub(1);
        let start = d.start & !mask;
        let end = d.end.checked_add(mask).ok_or(Error::Overflow)? & !mask;
        let end = end.min(self.layout.chunk_bytes());
        let len = end.checked_sub(start).ok_or(Error::Overflow)?;
        let chunk = self
            .layout
            .area_location(self.current_area)
            .ok_or(Error::Overflow)?;
        let sector = self
            .layout
            .chunk_to_sector(chunk)
            .and_then(|s| s.checked_add(u64::from(start.wrapping_shr(9))))
            .ok_or(Error::Overflow)?;
        Ok(AreaWrite {
            area: self.current_area,
            chunk,
            offset: start,
            len,
            sector,
            sectors: len.wrapping_shr(9),
        })
    }

    /// The layout. C: `ps->exceptions_per_area` and `store->chunk_size`.
    pub const fn layout(&self) -> Layout {
        self.layout
    }

    /// Whether the store is valid. C: `ps->valid`.
    pub const fn is_valid(&self) -> bool {
        self.valid
    }

    /// Next chunk to allocate. C: `ps->next_free`.
    pub const fn next_free(&self) -> u64 {
        self.next_free
    }

    /// Area held in memory. C: `ps->current_area`.
    pub const fn current_area(&self) -> u64 {
        self.current_area
    }

    /// Exceptions recorded in the in-memory area. C: `ps->current_committed`.
    pub const fn current_committed(&self) -> u32 {
        self.current_committed
    }

    /// Prepared exceptions not yet committed. C: `ps->pending_count`.
    pub const fn pending_count(&self) -> u32 {
        self.pending_count
    }

    /// Committed exceptions whose callbacks wait for the next flush.
    /// C: `ps->callback_count`.
    pub const fn callback_count(&self) -> u32 {
        self.callback_count
    }

    /// The byte range of the area buffer changed since the last successful
    /// write, rounded out to the write block, or `None`.
    ///
    /// No C counterpart.
    pub fn dirty_range(&self) -> Option<Range<usize>> {
        self.dirty?;
        self.area_write().ok()?.range()
    }

    /// The header to write for this store's current validity.
    ///
    /// C: the header built by `write_header()`.
    pub const fn header(&self) -> DiskHeader {
        DiskHeader::new(self.valid, self.layout.chunk_size())
    }

    /// Usage figures for a COW device of `cow_sectors` sectors.
    ///
    /// C: `persistent_usage()`.
    pub fn usage(&self, cow_sectors: u64) -> Option<Usage> {
        self.layout
            .usage(self.next_free, self.current_area, cow_sectors)
    }

    /// Allocates the data chunk of a new exception on a COW device of
    /// `cow_sectors` sectors, moving `next_free` past metadata chunks.
    /// O(1), no allocation: safe under a spinlock.
    ///
    /// C: `persistent_prepare_exception()`. Unlike C, a `next_free` that is
    /// not a data chunk (C never produces one) is moved to the next data
    /// chunk before use.
    ///
    /// # Errors
    ///
    /// [`Error::NoSpace`] if the chunk does not fit on the device
    /// (`cow_sectors < (next_free + 1) * chunk_size`);
    /// [`Error::TooManyPending`] on counter overflow.
    pub fn prepare_exception(&mut self, cow_sectors: u64) -> Result<u64, Error> {
        let mut chunk = max(self.next_free, INITIAL_NEXT_FREE);
        if self.layout.is_metadata_chunk(chunk) {
            chunk = chunk.checked_add(1).ok_or(Error::Overflow)?;
        }
        let fits = chunk
            .checked_add(1)
            .and_then(|c| c.checked_mul(u64::from(self.layout.chunk_sectors())))
            .is_some_and(|end| end <= cow_sectors);
        if !fits {
            return Err(Error::NoSpace { chunk, cow_sectors });
        }
        let pending = self
            .pending_count
            .checked_add(1)
            .ok_or(Error::TooManyPending)?;
        let next = chunk
            .checked_add(1)
            .and_then(|c| self.layout.skip_metadata(c))
            .ok_or(Error::Overflow)?;
        self.pending_count = pending;
        self.next_free = next;
        Ok(chunk)
    }

    /// Records a finished exception in the area buffer and queues its
    /// callback. `valid == false` (a failed copy) invalidates the store.
    /// Returns the first step of a flush when no other exception is pending
    /// or the area is now full, else [`CommitStep::Queued`]. An exception
    /// that could not be read back by [`Scan`] (chunk 0, a metadata chunk,
    /// an `old_chunk` too large) is not recorded: it is consumed as a
    /// failed one and [`CommitStep::Refused`] says why.
    ///
    /// C: `persistent_commit_exception()` up to its I/O.
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`], [`Error::FlushInProgress`],
    /// [`Error::CommitWithoutPrepare`] or [`Error::IndexOutOfArea`]: the
    /// caller broke the protocol, and nothing changes.
    pub fn commit_exception(
        &mut self,
        area: &mut [u8],
        e: Exception,
        valid: bool,
    ) -> Result<CommitStep, Error> {
        self.layout.check_area_len(area.len())?;
        if self.flush != FlushPhase::Idle {
            return Err(Error::FlushInProgress);
        }
        let pending = self
            .pending_count
            .checked_sub(1)
            .ok_or(Error::CommitWithoutPrepare)?;
        let index = self.current_committed;
        let epa = self.layout.exceptions_per_area();
        if index >= epa {
            return Err(Error::IndexOutOfArea {
                index,
                exceptions_per_area: epa,
            });
        }
        let callbacks = self.callback_count.checked_add(1).ok_or(Error::Overflow)?;
        if let Err(error) = self
            .layout
            .check_exception(self.current_area, index, e, None)
        {
            // Consume it as a failed exception, so that the flush the last
            // pending exception triggers still comes.
            self.valid = false;
            self.callback_count = callbacks;
            self.pending_count = pending;
            let callbacks = if pending == 0 {
                self.callback_count = 0;
                callbacks
            } else {
                0
            };
            return Ok(CommitStep::Refused { error, callbacks });
        }
        write_exception(area, index, e).ok_or(Error::Overflow)?;
        self.mark_dirty(index)?;
        if !valid {
            self.valid = false;
        }
        self.current_committed = index.wrapping_add(1);
        self.callback_count = callbacks;
        self.pending_count = pending;

        let full = self.current_committed == epa;
        if pending != 0 && !full {
            return Ok(CommitStep::Queued);
        }
        if full {
            let next_area = self.current_area.checked_add(1).ok_or(Error::Overflow)?;
            let io = self.layout.area_io(next_area).ok_or(Error::Overflow)?;
            self.flush = FlushPhase::ZeroingNext;
            return Ok(CommitStep::ZeroNextArea(io));
        }
        self.flush_write_or_finish(false)
    }

    fn flush_write_or_finish(&mut self, zero_failed: bool) -> Result<CommitStep, Error> {
        if self.valid {
            let w = self.area_write()?;
            self.flush = FlushPhase::Writing;
            Ok(CommitStep::WriteArea(w))
        } else {
            self.finish_flush(zero_failed)
        }
    }

    /// Ends a flush. O(1): moving to the next area leaves the zeroing of
    /// the area buffer to the caller ([`CommitStep::Complete`]).
    fn finish_flush(&mut self, zero_failed: bool) -> Result<CommitStep, Error> {
        let clear_area = self.current_committed == self.layout.exceptions_per_area();
        if clear_area {
            let next_area = self.current_area.checked_add(1).ok_or(Error::Overflow)?;
            self.current_committed = 0;
            self.current_area = next_area;
            self.dirty = if zero_failed {
                Some(self.whole_area())
            } else {
                None
            };
        }
        let callbacks = self.callback_count;
        self.callback_count = 0;
        self.flush = FlushPhase::Idle;
        Ok(CommitStep::Complete {
            callbacks,
            valid: self.valid,
            clear_area,
        })
    }

    /// Reports the outcome of the I/O asked for by the last
    /// [`CommitStep::ZeroNextArea`] or [`CommitStep::WriteArea`] and returns
    /// the next step. A failure invalidates the store; after a failed
    /// zeroing the area is not written. O(1), so it can run under a
    /// spinlock.
    ///
    /// C: the rest of `persistent_commit_exception()`.
    ///
    /// # Errors
    ///
    /// [`Error::NoFlushInProgress`]; nothing changes then.
    pub fn commit_io_done(&mut self, ok: bool) -> Result<CommitStep, Error> {
        match self.flush {
            FlushPhase::Idle => Err(Error::NoFlushInProgress),
            FlushPhase::ZeroingNext => {
                if !ok {
                    self.valid = false;
                }
                self.flush_write_or_finish(!ok)
            }
            FlushPhase::Writing => {
                if ok {
                    self.dirty = None;
                } else {
                    self.valid = false;
                }
                self.finish_flush(false)
            }
        }
    }

    /// Marks the store invalid and returns the header to write to chunk 0
    /// (encode it into a chunk-sized buffer with [`DiskHeader::encode`]).
    /// If that write fails, log [`messages::DROP_WRITE_HEADER_FAILED`].
    ///
    /// C: `persistent_drop_snapshot()`.
    pub fn drop_snapshot(&mut self) -> DiskHeader {
        self.valid = false;
        self.header()
    }

    /// Says where the next run of exceptions to merge is, newest first.
    /// When the in-memory area is empty it asks for the previous area to be
    /// read (the state changes only once [`Pstore::merge_area_read`]
    /// accepts it). O(1).
    ///
    /// C: `persistent_prepare_merge()`.
    ///
    /// # Errors
    ///
    /// [`Error::MergeCommitFailed`] after a failed merge write;
    /// [`Error::MergeState`] while a merge write is outstanding.
    pub fn prepare_merge(&mut self) -> Result<PrepareMerge, Error> {
        match self.merge {
            MergePhase::Failed => return Err(Error::MergeCommitFailed),
            MergePhase::Committing { .. } => return Err(Error::MergeState),
            MergePhase::Idle
            | MergePhase::Reading
            | MergePhase::Finding
            | MergePhase::Prepared { .. } => {}
        }
        if self.current_committed == 0 {
            if self.current_area == 0 {
                self.merge = MergePhase::Idle;
                return Ok(PrepareMerge::Done);
            }
            let prev = self.current_area.wrapping_sub(1);
            let io = self.layout.area_io(prev).ok_or(Error::Overflow)?;
            self.merge = MergePhase::Reading;
            return Ok(PrepareMerge::ReadArea(io));
        }
        self.merge = MergePhase::Finding;
        Ok(PrepareMerge::FindRun(self.run_query()))
    }

    fn run_query(&self) -> RunQuery {
        RunQuery {
            layout: self.layout,
            area: self.current_area,
            committed: self.current_committed,
        }
    }

    /// Moves to the previous area, read for [`PrepareMerge::ReadArea`] and
    /// accepted by [`Layout::check_full_area`], and says where its last run
    /// is. O(1).
    ///
    /// C: the `!ps->current_committed` branch of
    /// `persistent_prepare_merge()`. Unlike C, a failed read or check
    /// (report it by not calling this) leaves the store on its current
    /// area.
    ///
    /// # Errors
    ///
    /// [`Error::MergeState`] if no read was asked for or `checked` is not
    /// the previous area.
    pub fn merge_area_read(&mut self, checked: CheckedArea) -> Result<RunQuery, Error> {
        if self.merge != MergePhase::Reading || self.current_committed != 0 {
            return Err(Error::MergeState);
        }
        let prev = self.current_area.checked_sub(1).ok_or(Error::MergeState)?;
        if checked.area != prev {
            return Err(Error::MergeState);
        }
        self.current_area = prev;
        self.current_committed = self.layout.exceptions_per_area();
        self.dirty = None;
        self.merge = MergePhase::Finding;
        Ok(self.run_query())
    }

    /// Records the run [`RunQuery::find`] found; dm-snapshot merges it next.
    /// O(1).
    ///
    /// # Errors
    ///
    /// [`Error::MergeState`] unless a run was being looked for;
    /// [`Error::MergeCountInvalid`] unless `1 <= run.count <=`
    /// the exceptions in memory.
    pub fn merge_run_found(&mut self, run: &MergeRun) -> Result<(), Error> {
        if self.merge != MergePhase::Finding {
            return Err(Error::MergeState);
        }
        if run.count == 0 || run.count > self.current_committed {
            return Err(Error::MergeCountInvalid {
                nr_merged: run.count,
                prepared: self.current_committed,
            });
        }
        self.merge = MergePhase::Prepared { count: run.count };
        Ok(())
    }

    /// Marks the last `nr_merged` exceptions of the in-memory area as gone
    /// and returns what to clear and write; report the write's outcome with
    /// [`Pstore::commit_merge_done`]. O(1): the caller clears the records.
    ///
    /// C: `persistent_commit_merge()` up to its I/O.
    ///
    /// # Errors
    ///
    /// [`Error::MergeCountInvalid`] unless `1 <= nr_merged <=` the count of
    /// the last prepared run (which is at most `current_committed`);
    /// [`Error::MergeState`] without a prepared run;
    /// [`Error::MergeCommitFailed`]. Nothing changes on error.
    pub fn commit_merge(&mut self, nr_merged: u32) -> Result<MergeCommit, Error> {
        let prepared = match self.merge {
            MergePhase::Prepared { count } => count,
            MergePhase::Failed => return Err(Error::MergeCommitFailed),
            _ => return Err(Error::MergeState),
        };
        if nr_merged == 0 || nr_merged > prepared || nr_merged > self.current_committed {
            return Err(Error::MergeCountInvalid {
                nr_merged,
                prepared,
            });
        }
        let first = self.current_committed.wrapping_sub(nr_merged);
        let start = exception_offset(first).ok_or(Error::Overflow)?;
        let end = exception_offset(self.current_committed).ok_or(Error::Overflow)?;
        let saved = self.dirty;
        self.mark_dirty(first)?;
        if let Err(e) = self.mark_dirty(self.current_committed.wrapping_sub(1)) {
            self.dirty = saved;
            return Err(e);
        }
        let write = match self.area_write() {
            Ok(w) => w,
            Err(e) => {
                self.dirty = saved;
                return Err(e);
            }
        };
        self.merge = MergePhase::Committing { nr_merged };
        Ok(MergeCommit {
            clear: start..end,
            write,
        })
    }

    /// Reports the outcome of the [`Pstore::commit_merge`] write. On
    /// success the exceptions are gone and `next_free` becomes
    /// `area_location(current_area) + current_committed + 1`, as in C. On
    /// failure the store refuses further merging
    /// ([`Error::MergeCommitFailed`]) until it is reloaded: C would carry on
    /// from cleared records.
    ///
    /// C: the rest of `persistent_commit_merge()`.
    ///
    /// # Errors
    ///
    /// [`Error::MergeState`] if no merge write was outstanding.
    pub fn commit_merge_done(&mut self, ok: bool) -> Result<(), Error> {
        let MergePhase::Committing { nr_merged } = self.merge else {
            return Err(Error::MergeState);
        };
        if !ok {
            self.merge = MergePhase::Failed;
            return Ok(());
        }
        let cc = self
            .current_committed
            .checked_sub(nr_merged)
            .ok_or(Error::Overflow)?;
        let next_free = self
            .layout
            .area_location(self.current_area)
            .and_then(|l| l.checked_add(u64::from(cc)))
            .and_then(|l| l.checked_add(1))
            .ok_or(Error::Overflow)?;
        self.current_committed = cc;
        self.next_free = next_free;
        self.dirty = None;
        self.merge = MergePhase::Idle;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Table options and status
// ---------------------------------------------------------------------------

/// An unsupported persistent store option.
///
/// C: `persistent_ctr()`, `DMERR` "Unsupported persistent store option:
/// %s", `-EINVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnsupportedOption<'a> {
    /// The option string as given.
    pub options: &'a [u8],
}

impl UnsupportedOption<'_> {
    /// Positive errno: `EINVAL` (C: `-EINVAL` from `persistent_ctr()`).
    pub const fn errno(&self) -> i32 {
        errno::EINVAL
    }
}

impl fmt::Display for UnsupportedOption<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Unsupported persistent store option: {}",
            self.options.escape_ascii()
        )
    }
}

/// Parses the store options: the characters after `P` in the table's store
/// type (`None` when there are none). Returns whether userspace supports
/// overflow (`O`, either case; like C only the first character counts).
///
/// C: the `options` handling of `persistent_ctr()`.
///
/// # Errors
///
/// [`UnsupportedOption`] when the first character is not `O`/`o`.
pub fn parse_options(options: Option<&[u8]>) -> Result<bool, UnsupportedOption<'_>> {
    match options {
        None => Ok(false),
        Some(o) => match o.first() {
            Some(b'O' | b'o') => Ok(true),
            _ => Err(UnsupportedOption { options: o }),
        },
    }
}

/// The store's part of the table status line: `" P <chunk_size>"` or
/// `" PO <chunk_size>"`.
///
/// C: the `STATUSTYPE_TABLE` case of `persistent_status()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableStatus {
    /// C: `store->userspace_supports_overflow`.
    pub userspace_supports_overflow: bool,
    /// C: `store->chunk_size`.
    pub chunk_size: ChunkSize,
}

impl fmt::Display for TableStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.userspace_supports_overflow {
            "PO"
        } else {
            "P"
        };
        write!(f, " {} {}", kind, self.chunk_size.sectors())
    }
}
