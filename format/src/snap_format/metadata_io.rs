// SPDX-License-Identifier: GPL-2.0-only

//! The metadata I/O of the commit and merge paths: [`MetadataIo`].

use super::{
    error::Error,
    header::DiskHeader,
    layout::{
        AreaIo,
        AreaWrite, //
    }, //
};

/// A metadata read or write that failed, with its positive errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoError(pub i32);

/// The COW device as [`Committer`](super::Committer) uses it. The kernel
/// module implements it with dm-io, the host tests with memory.
///
/// Every call returns once its I/O has completed. A failed call may have
/// written any part of what it was asked to write.
pub trait MetadataIo {
    /// The memory of the area buffer, which the I/O must know (dm-io
    /// maps vmalloc and kmalloc memory differently).
    type Area: ?Sized;

    /// Size of the COW device in sectors.
    fn cow_sectors(&self) -> u64;

    /// Reads metadata area `io` (one chunk) into `area`.
    ///
    /// C: `area_io(ps, REQ_OP_READ)`.
    fn read_area(&mut self, io: AreaIo, area: &mut Self::Area) -> Result<(), IoError>;

    /// Writes the bytes `w.range()` of `area` to the sectors `w` names,
    /// with `REQ_PREFLUSH | REQ_FUA | REQ_SYNC`: what was written before is
    /// durable before the bytes are, and they are durable on success.
    ///
    /// C: `area_io(ps, REQ_OP_WRITE | REQ_PREFLUSH | REQ_FUA | REQ_SYNC)`,
    /// which writes the whole chunk.
    fn write_area(&mut self, w: &AreaWrite, area: &Self::Area) -> Result<(), IoError>;

    /// Writes zeros over metadata area `io` (one chunk), a plain write.
    ///
    /// C: `zero_disk_area()`.
    fn zero_area(&mut self, io: AreaIo) -> Result<(), IoError>;

    /// Writes `header` over chunk 0, zeros after it to the end of the
    /// chunk, with `REQ_PREFLUSH | REQ_FUA`.
    ///
    /// C: `write_header()`, a plain write.
    fn write_header(&mut self, header: DiskHeader) -> Result<(), IoError>;

    /// Logs a problem [`Committer::commit_exception`](super::Committer::commit_exception)
    /// met that makes the store invalid and that C would not have met: a
    /// record it refused, the clean-up write failing. A failed commit write
    /// is not reported, as C does not log it.
    fn report(&mut self, error: &Error);
}
