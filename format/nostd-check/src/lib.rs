// SPDX-License-Identifier: GPL-2.0-only

//! Proves that `snap_format/mod.rs` builds the way a kernel module uses it:
//! as a non-root module of a `#![no_std]` edition-2021 crate with only
//! `core`, under the kernel's lints (see `Cargo.toml`).

#![no_std]

// The format core, reachable as a kernel module would export it (its own
// module docs document it).
#[path = "../../src/snap_format/mod.rs"]
pub mod snap_format;

/// A private copy, as a module that uses only part of the API would
/// include it; the kernel module then needs the first two allowances (the
/// third only exists because this crate includes the file twice).
#[allow(dead_code, unreachable_pub, clippy::duplicate_mod)]
#[path = "../../src/snap_format/mod.rs"]
mod private_copy;

/// Uses the private copy once so it is not entirely dead.
pub fn default_exceptions_per_area() -> u32 {
    private_copy::Layout::new(private_copy::ChunkSize::DEFAULT).exceptions_per_area()
}
