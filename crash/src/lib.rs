// SPDX-License-Identifier: GPL-2.0-only

//! Crash-replay test of the persistent exception store.
//!
//! The guest test puts the origin and the COW device of a snapshot on two
//! slices of one `log-writes` device, so that one dm-log-writes log orders
//! every write to both. This crate reads that log back and rebuilds the two
//! devices as they were at each crash point, activates a snapshot over the
//! result and checks what it shows.
//!
//! - [`tag`]: the self-describing 4 KiB blocks the workload writes.
//! - [`log`]: parser of the dm-log-writes log format.
//! - [`replay`]: crash points and the incremental rebuild of the images.
//! - [`oracle`]: what the snapshot must show at a crash point.
//! - [`subset`]: subset crash states (the CrashMonkey model): any subset of
//!   the writes not yet made durable at a flush, FUA write or mark.
//! - [`judge`]: the format-level judgement of a crash state (no kernel).
//! - [`dm`]: a minimal device-mapper ioctl client.
//! - [`blockdev`]: aligned buffers and `O_DIRECT` I/O.
//! - [`hostile`]: hostile COW images (fuzz corpus and mutants of valid
//!   stores) and the format core's verdict on each, for `hostile_load`.
//!
//! The crash model is described in `Documentation/crash-model.md`.

#![warn(missing_docs)]

pub mod blockdev;
pub mod dm;
pub mod hostile;
pub mod judge;
pub mod log;
pub mod oracle;
pub mod replay;
pub mod subset;
pub mod tag;
#[cfg(test)]
mod test_util;
