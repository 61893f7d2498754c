// SPDX-License-Identifier: GPL-2.0-only

//! The test programs of the persistent exception store, as a library: each
//! program in `src/bin/` parses its command line and calls one of the
//! modules below.
//!
//! | program | module | what it does |
//! |---|---|---|
//! | `crash_workload` | [`workload`] | the writes of the crash-replay test, device-mapper commands, test dumps |
//! | `crash_replay` | [`replay::kernel`] | replays a dm-log-writes log at every crash point in the kernel |
//! | `hostile_load` | [`hostile::load`] | loads hostile COW images and compares with the format core |
//! | `fault_run` | [`fault`] | fails every I/O and allocation of the store in turn |
//!
//! The crash replay: the guest test puts the origin and the COW device of a
//! snapshot on two slices of one `log-writes` device, so that one
//! dm-log-writes log orders every write to both. The replay reads that log
//! back and rebuilds the two devices as they were at each crash point,
//! activates a snapshot over the result and checks what it shows.
//!
//! - [`tag`]: the self-describing 4 KiB blocks the workload writes.
//! - [`log`]: parser of the dm-log-writes log format.
//! - [`replay`]: crash points and the incremental rebuild of the images.
//! - [`oracle`]: what the snapshot must show at a crash point.
//! - [`subset`]: subset crash states (the CrashMonkey model): any subset of
//!   the writes not yet made durable at a flush, FUA write or mark.
//! - [`judge`]: the format-level judgement of a crash state (no kernel).
//! - [`hostile`]: hostile COW images (fuzz corpus and mutants of valid
//!   stores) and the format core's verdict on each, for `hostile_load`.
//! - [`fault`]: the fault runner.
//! - [`workload`]: the workload and helpers of the guest tests.
//! - [`dm`]: a minimal device-mapper ioctl client.
//! - [`blockdev`]: aligned buffers and `O_DIRECT` I/O.
//!
//! Every figure of the on-disk layout comes from the format core
//! (`snap_format`). The crash model is described in
//! `Documentation/crash-model.md`.
//!
//! Safe Rust but for one call: the ioctl of [`dm`], which no safe interface
//! of the standard library makes.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod blockdev;
pub mod dm;
pub mod fault;
pub mod hostile;
pub mod judge;
pub mod log;
pub mod oracle;
pub mod replay;
pub mod subset;
pub mod tag;
#[cfg(test)]
mod test_util;
pub mod workload;
