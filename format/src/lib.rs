// SPDX-License-Identifier: GPL-2.0-only

//! Host crate root of the dm-snapshot persistent exception store format
//! core.
//!
//! All code lives in the `snap_format/` directory module, which a kernel
//! module includes as a plain module with
//! `#[path = ".../format/src/snap_format/mod.rs"]`; this root only makes it a
//! `no_std` crate for host tests, property tests, the fuzzer and userspace
//! tools.

#![no_std]
#![warn(missing_docs)]

#[path = "snap_format/mod.rs"]
mod snap_format;

pub use snap_format::*;
