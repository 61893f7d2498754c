// SPDX-License-Identifier: GPL-2.0

//! Exception stores of the dm-snapshot target.
//!
//! dm-snapshot keeps, for each snapshot, the map of chunks that were copied
//! out of the origin ("exceptions") in an exception store. A store type is a
//! table of callbacks registered under a name; the snapshot table's store
//! argument (`P`, `N`) picks one. To implement a store, implement
//! [`ExceptionStore`] and keep a [`Registration`] alive for as long as the
//! module is loaded.
//!
//! Per-store data (what the C stores keep in `store->context`) is a
//! [`ForeignOwnable`] created by [`ExceptionStore::new`] and dropped when
//! dm-snapshot destroys the store. Callbacks only get a shared borrow of it:
//! dm-snapshot calls some of them concurrently, so mutable state needs
//! interior mutability with the locking each callback's context allows.
//!
//! C header: [`drivers/md/dm-exception-store.h`](srctree/drivers/md/dm-exception-store.h)
//!
//! [`ForeignOwnable`]: kernel::types::ForeignOwnable

use kernel::block::SECTOR_SHIFT;

mod completion;
mod operations;
mod registration;
mod sink;
mod status;
mod store;

pub use completion::CommitCompletion;
pub use operations::ExceptionStore;
pub use registration::{
    Registration,
    TypeStorage, //
};
pub use sink::ExceptionSink;
pub use status::{
    StatusType,
    StatusWriter, //
};
pub use store::{
    Store,
    StoreSetup, //
};

/// A chunk number (`chunk_t`): chunk `n` covers sectors
/// `n * chunk_size .. (n + 1) * chunk_size` of a device.
pub type Chunk = u64;

/// The bound dm-snapshot puts on a chunk size, in sectors: a chunk in bytes
/// must fit an `int` (`INT_MAX >> SECTOR_SHIFT`, as
/// `dm_exception_store_set_chunk_size()` checks). The largest chunk size a
/// store can set is the largest power of two below it, 2^21 sectors.
pub const CHUNK_SIZE_LIMIT_SECTORS: u32 = (i32::MAX as u32) >> SECTOR_SHIFT;

/// An exception: chunk `old_chunk` of the origin is kept in chunk
/// `new_chunk` of the COW device (`struct dm_exception`, less its hash links).
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::Exception;
///
/// // Origin chunk 100's old data is in chunk 2 of the COW device.
/// let e = Exception { old_chunk: 100, new_chunk: 2 };
/// assert_eq!(e, Exception { old_chunk: 100, new_chunk: 2 });
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Exception {
    /// The chunk of the origin.
    pub old_chunk: Chunk,
    /// Where its old data lives on the COW device.
    pub new_chunk: Chunk,
}

/// What [`ExceptionStore::read_metadata`] found on the COW device.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::Metadata;
///
/// // The persistent store's header field `valid`.
/// fn from_header(valid: u32) -> Metadata {
///     if valid == 0 {
///         Metadata::Invalid
///     } else {
///         Metadata::Valid
///     }
/// }
/// assert_eq!(from_header(0), Metadata::Invalid);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Metadata {
    /// The snapshot is usable; its exceptions were passed to the sink.
    Valid,
    /// The snapshot was invalidated earlier (it overflowed, or I/O failed):
    /// it loads, but reports `Invalid` and cannot be read.
    Invalid,
}

/// The run of exceptions [`ExceptionStore::prepare_merge`] offers to merge:
/// the most recent one and how many consecutive ones precede it.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::MergeRun;
///
/// // Exceptions 10 -> 5, 11 -> 6 and 12 -> 7 merge as one run.
/// let run = MergeRun {
///     last_old_chunk: 12,
///     last_new_chunk: 7,
///     count: 3,
/// };
/// assert_eq!(run.last_old_chunk + 1 - u64::from(run.count), 10);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MergeRun {
    /// The origin chunk of the most recent exception.
    pub last_old_chunk: Chunk,
    /// The COW chunk of the most recent exception.
    pub last_new_chunk: Chunk,
    /// The number of exceptions in the run, at least 1: the most recent one
    /// and those before it whose chunks both decrease by one each.
    pub count: u32,
}

/// How full a store is, in sectors, as `dmsetup status` reports it.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::exception_store::Usage;
///
/// // 4 KiB chunks on a 1 MiB COW device: the header, one area, three chunks.
/// let u = Usage {
///     total_sectors: 2048,
///     sectors_allocated: 5 * 8,
///     metadata_sectors: 2 * 8,
/// };
/// assert!(u.metadata_sectors <= u.sectors_allocated);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Usage {
    /// The size of the COW device.
    pub total_sectors: u64,
    /// The sectors in use: data chunks, metadata and header.
    pub sectors_allocated: u64,
    /// The sectors in use for metadata and header.
    pub metadata_sectors: u64,
}
