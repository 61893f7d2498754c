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
//! The module is written to be compiled twice: as the host crate
//! `dm-snap-format` (through `lib.rs`) and as a plain module of a kernel
//! module (`#[path = ".../snap_format/mod.rs"] mod snap_format;`). It
//! therefore uses only `core`, never allocates, and never panics: arithmetic
//! is checked, slices are reached with `get()`/`chunks_exact()`, and every
//! failure is a value of [`Error`].
//!
//! One file per concept; every public item is re-exported here, so it is
//! named `snap_format::Item` whichever file holds it:
//!
//! - `error.rs`: [`Error`], [`Warning`], the [`errno`] values and the C
//!   store's log [`messages`].
//! - `convert.rs`: small conversion helpers (no `as`).
//! - `chunk_size.rs`: logical block sizes and the chunk-size rules
//!   ([`ChunkSize`], [`TableChunkSize`]).
//! - `layout.rs`: layout arithmetic ([`Layout`]).
//! - `records.rs`: exception records ([`Exception`]) and their encoding.
//! - `header.rs`: the on-disk header ([`DiskHeader`]) and the header
//!   decision at activation ([`read_header`]).
//! - `scan.rs`: the validating area scan ([`Scan`], [`scan_areas`]).
//! - `duplicates.rs`: duplicate `new_chunk` detection ([`ChunkBits`]).
//! - `shared.rs`: the state `prepare_exception` and `usage` reach, behind a
//!   spinlock ([`Shared`]).
//! - `metadata_io.rs`: the metadata I/O of the commit and merge paths
//!   ([`MetadataIo`]).
//! - `committer.rs`: the commit and merge paths, which own the in-memory
//!   area ([`Committer`]).
//! - `table.rs`: table options and status ([`parse_options`],
//!   [`TableStatus`]).
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

mod chunk_size;
mod committer;
mod convert;
mod duplicates;
mod error;
mod header;
mod layout;
mod metadata_io;
mod records;
mod scan;
mod shared;
mod table;

// A module that includes the core privately and uses only part of it
// would otherwise be warned about the re-exports it does not use.
#[allow(unused_imports)]
pub use self::{
    chunk_size::{
        BlockSizes,
        ChunkSize,
        LogicalBlockSize,
        TableChunkSize,
        CHUNK_SIZE_LIMIT_SECTORS,
        DM_CHUNK_SIZE_DEFAULT_SECTORS,
        MAX_CHUNK_BYTES,
        MAX_CHUNK_SECTORS,
        SECTOR_SHIFT,
        SECTOR_SIZE, //
    },
    committer::{
        batch_capacity,
        io_buffer_len,
        Batch,
        Buffers,
        Commit,
        CommitWrite,
        CommitWriteParts,
        Committer,
        Flushed,
        MergeRun,
        Merger,
        BATCHES,
        MAX_BATCH, //
    },
    duplicates::{
        find_new_chunk,
        in_order_bound,
        ChunkBits, //
    },
    error::{
        errno,
        messages,
        ChunkSizeError,
        Error,
        LogLevel,
        Warning,
        DM_MSG_PREFIX, //
    },
    header::{
        read_header,
        DiskHeader,
        HeaderDecision,
        DISK_HEADER_SIZE,
        SNAPSHOT_DISK_VERSION,
        SNAP_MAGIC, //
    },
    layout::{
        AreaIo,
        AreaWrite,
        Layout,
        Usage,
        DM_CHUNK_NUMBER_BITS,
        DM_CHUNK_NUMBER_MAX,
        INITIAL_NEXT_FREE,
        MAX_DEVICE_SECTORS,
        NUM_SNAPSHOT_HDR_CHUNKS, //
    },
    metadata_io::{
        IoError,
        MetadataIo, //
    },
    records::{
        clear_exception,
        read_exception,
        write_exception,
        Exception,
        DISK_EXCEPTION_SIZE, //
    },
    scan::{
        prefetch_window,
        scan_areas,
        AreaFill,
        CowTooSmall,
        Scan,
        ScanResult,
        ScanStop,
        Stopped,
        DM_PREFETCH_CHUNKS,
        PREFETCH_BYTES, //
    },
    shared::{
        Shared,
        SharedLock, //
    },
    table::{
        parse_options,
        TableStatus,
        UnsupportedOption, //
    }, //
};
