// SPDX-License-Identifier: GPL-2.0-only

//! Offline tools for the COW device of a dm-snapshot persistent exception
//! store: `snap_check`, `snap_dump` and `snap_restore`, named and split like
//! thin-provisioning-tools (`thin_check`, `thin_dump`, `thin_restore`).
//!
//! Every piece of format logic (header decision, layout arithmetic,
//! chunk-size rules, record encoding, the validating area scan) comes from
//! the format core [`snap_format`], the same code the kernel module runs, so
//! the tools and the module cannot disagree about a COW device. This crate
//! adds only I/O, reporting and the dump text format.
//!
//! - [`io`]: the [`io::BlockIo`] trait with a file/block-device backend and
//!   an in-memory backend that injects errors for tests.
//! - [`header`]: reading the header chunk of a device.
//! - [`check`]: every problem of a COW device, one report each.
//! - [`dump`]: header and exceptions as text, streaming.
//! - [`repair`]: a dump of what can be salvaged from a damaged store.
//! - [`restore`]: a COW device from a dump.
//! - [`xml`]: the dump format (writer and streaming reader).
//! - [`duplicates`]: finding chunks used twice in bounded memory.
//! - [`cli`], [`progress`]: helpers of the tools.
//!
//! C source: [drivers/md/dm-snap-persistent.c](srctree/drivers/md/dm-snap-persistent.c)

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::todo,
    clippy::unimplemented
)]

pub mod check;
pub mod cli;
pub mod dump;
pub mod duplicates;
pub mod header;
pub mod io;
pub mod progress;
pub mod repair;
pub mod restore;
pub mod xml;

pub use snap_format;
