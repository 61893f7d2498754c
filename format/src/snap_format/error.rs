// SPDX-License-Identifier: GPL-2.0-only

//! Errors and warnings of the format core, with the [`errno`] values they
//! carry and the C store's log [`messages`].

#[cfg(doc)]
use super::{
    header::{
        SNAPSHOT_DISK_VERSION,
        SNAP_MAGIC, //
    },
    scan::scan_areas, //
};
use core::fmt;

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
    pub const TYPE_NAME: &core::ffi::CStr = c"persistent";
    /// Name of the compatible store type. C: `_persistent_compat_type.name`.
    pub const COMPAT_TYPE_NAME: &core::ffi::CStr = c"P";
}

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
    /// A logical block size is not a power of two between 512 bytes and
    /// `max` (the largest chunk, or the chunk a write block must fit).
    ///
    /// No C counterpart (the kernel guarantees it), `-EINVAL`.
    InvalidBlockSize {
        /// The block size given, in bytes.
        bytes: u32,
        /// The largest size allowed there, in bytes.
        max: u32,
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
    /// Writing a metadata area failed.
    ///
    /// C: the `area_io()` failure of `persistent_commit_merge()` (no
    /// message; dm-snapshot stops merging and says so).
    WriteFailed {
        /// The chunk being written.
        chunk: u64,
        /// The positive errno of the write.
        errno: i32,
    },
    /// Writing back the records cleared after the end marker failed; the
    /// store is invalid.
    ///
    /// No C counterpart (C leaves them on disk); the write's errno.
    CleanupFailed {
        /// The area holding them.
        area: u64,
        /// The positive errno of the write.
        errno: i32,
    },
    /// Zeroing metadata area 0 of a new store failed.
    ///
    /// C: `persistent_read_metadata()`, [`messages::ZERO_DISK_AREA_0_FAILED`]
    /// with `DMWARN`; the write's errno.
    NewStoreZeroFailed {
        /// The positive errno of the write.
        errno: i32,
    },
    /// Writing the header of a new store failed.
    ///
    /// C: `persistent_read_metadata()`, [`messages::WRITE_HEADER_FAILED`]
    /// with `DMWARN`; the write's errno.
    NewStoreHeaderFailed {
        /// The positive errno of the write.
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
    /// The caller could not queue the callback of an exception to commit:
    /// its queue was full, which [`crate::batch_capacity`] rules out.
    ///
    /// No C counterpart, `-EINVAL`.
    CallbackQueueFull,
    /// `commit_merge` asked to clear more exceptions than were prepared.
    ///
    /// C: `BUG_ON(nr_merged > ps->current_committed)`; here `-EINVAL`.
    MergeCountInvalid {
        /// Number asked for.
        nr_merged: u32,
        /// Number prepared by the last `prepare_merge`.
        prepared: u32,
    },
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
            Self::Callback { errno: e }
            | Self::ReadFailed { errno: e, .. }
            | Self::WriteFailed { errno: e, .. }
            | Self::CleanupFailed { errno: e, .. }
            | Self::NewStoreZeroFailed { errno: e }
            | Self::NewStoreHeaderFailed { errno: e } => {
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
            | Self::CallbackQueueFull
            | Self::MergeCountInvalid { .. }
            | Self::Overflow => errno::EINVAL,
        }
    }

    /// How the C store logs this condition, or `None` where C stays silent
    /// (the caller's own message is enough, or the condition is frequent
    /// like `-ENOSPC`). Conditions C does not check are `Some(Err)`.
    pub const fn c_log_level(&self) -> Option<LogLevel> {
        match self {
            Self::InvalidOrCorrupt { .. }
            | Self::UnsupportedVersion { .. }
            | Self::NewStoreZeroFailed { .. }
            | Self::NewStoreHeaderFailed { .. } => Some(LogLevel::Warn),
            Self::NoSpace { .. }
            | Self::Callback { .. }
            | Self::ReadFailed { .. }
            | Self::WriteFailed { .. }
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
            Self::InvalidBlockSize { bytes, max } => write!(
                f,
                "logical block size {bytes} is not a power of two between 512 and {max} bytes"
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
            Self::WriteFailed { chunk, errno } => {
                write!(f, "writing chunk {chunk} failed with error {errno}")
            }
            Self::CleanupFailed { area, errno } => write!(
                f,
                "clearing the records after the end marker of area {area} failed with error {errno}"
            ),
            Self::NewStoreZeroFailed { .. } => f.write_str(messages::ZERO_DISK_AREA_0_FAILED),
            Self::NewStoreHeaderFailed { .. } => f.write_str(messages::WRITE_HEADER_FAILED),
            Self::NoSpace { chunk, cow_sectors } => write!(
                f,
                "COW device full: chunk {chunk} does not fit in {cow_sectors} sectors"
            ),
            Self::TooManyPending => f.write_str("too many prepared exceptions pending"),
            Self::CommitWithoutPrepare => {
                f.write_str("commit_exception called with no prepared exception pending")
            }
            Self::CallbackQueueFull => {
                f.write_str("no room to queue the completion of an exception to commit")
            }
            Self::MergeCountInvalid {
                nr_merged,
                prepared,
            } => write!(
                f,
                "cannot merge {nr_merged} exceptions: {prepared} were prepared"
            ),
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
