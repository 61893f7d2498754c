// SPDX-License-Identifier: GPL-2.0-only
//! Helpers of the tools' tests: scratch files, COW images built directly
//! from the format core's encoders (independently of `snap_restore`),
//! dumps, and running the real binaries.

#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

use snap_format::write_exception;
use snap_format::BlockSizes;
use snap_format::ChunkSize;
use snap_format::DiskHeader;
use snap_format::Exception;
use snap_format::Layout;

pub const CHECK: &str = env!("CARGO_BIN_EXE_snap_check");
pub const DUMP: &str = env!("CARGO_BIN_EXE_snap_dump");
pub const RESTORE: &str = env!("CARGO_BIN_EXE_snap_restore");

/// A fresh scratch directory for one test, emptied first (names are
/// unique within a test file; each test file has its own folder).
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("dm-snap-tools")
        .join(env!("CARGO_CRATE_NAME"))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn layout(chunk_sectors: u32) -> Layout {
    Layout::new(ChunkSize::new(chunk_sectors, BlockSizes::SECTOR).unwrap())
}

pub fn ex(old_chunk: u64, new_chunk: u64) -> Exception {
    Exception {
        old_chunk,
        new_chunk,
    }
}

/// `n` exceptions allocated as the module allocates them: data chunks in
/// order from 2, skipping metadata chunks; `old_chunk` spread out.
pub fn kernel_order(l: Layout, n: u64) -> Vec<Exception> {
    let mut out = Vec::new();
    let mut next = 2u64;
    for i in 0..n {
        next = l.skip_metadata(next).unwrap();
        out.push(ex(i.wrapping_mul(2_654_435_761) % (1 << 40), next));
        next += 1;
    }
    out
}

/// Sectors of a COW device just large enough for `exceptions` (their
/// areas, the terminator and their data chunks), plus `spare` chunks.
pub fn cow_sectors_for(l: Layout, exceptions: &[Exception], spare: u64) -> u64 {
    let epa = u64::from(l.exceptions_per_area());
    let last_area = exceptions.len() as u64 / epa;
    let end = l.area_location(last_area).unwrap() + 1;
    let max_new = exceptions.iter().map(|e| e.new_chunk).max().unwrap_or(0);
    (end.max(max_new + 1) + spare) * u64::from(l.chunk_sectors())
}

/// A COW image as the module leaves it: header, areas with `exceptions`,
/// zeroed terminator; data chunks zero.
pub fn image(l: Layout, valid: u32, cow_sectors: u64, exceptions: &[Exception]) -> Vec<u8> {
    let mut img = vec![0u8; usize::try_from(cow_sectors * 512).unwrap()];
    let cb = l.chunk_bytes() as usize;
    DiskHeader {
        valid,
        ..DiskHeader::new(true, l.chunk_size())
    }
    .encode(&mut img[..cb])
    .unwrap();
    let epa = l.exceptions_per_area() as usize;
    for (i, e) in exceptions.iter().enumerate() {
        let area = (i / epa) as u64;
        let at = l.area_location(area).unwrap() as usize * cb;
        write_exception(&mut img[at..at + cb], (i % epa) as u32, *e).unwrap();
    }
    img
}

/// The canonical dump of a store (as `snap_dump` writes it).
pub fn dump_text(l: Layout, valid: u32, cow_sectors: u64, exceptions: &[Exception]) -> String {
    let mut s = format!(
        "<snap_store dump_version=\"1\" disk_version=\"1\" valid=\"{valid}\" chunk_size=\"{}\" cow_sectors=\"{cow_sectors}\">\n",
        l.chunk_sectors()
    );
    for e in exceptions {
        s.push_str(&format!(
            "  <exception old_chunk=\"{}\" new_chunk=\"{}\"/>\n",
            e.old_chunk, e.new_chunk
        ));
    }
    s.push_str("</snap_store>\n");
    s
}

/// Byte offset of record `index` of area `area`.
pub fn record_offset(l: Layout, area: u64, index: u32) -> usize {
    (l.area_location(area).unwrap() * u64::from(l.chunk_bytes())) as usize + index as usize * 16
}

/// Writes an exception record into an image.
pub fn put_record(img: &mut [u8], l: Layout, area: u64, index: u32, e: Exception) {
    let at = record_offset(l, area, index);
    img[at..at + 16].copy_from_slice(&e.encode());
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a tool with `args` (stdin closed).
pub fn run(bin: &str, args: &[&str]) -> Output {
    let out = Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a tool that must fail with exit status `code`, saying `says` on
/// standard output or standard error; returns its output.
pub fn expect_exit(bin: &str, args: &[&str], code: i32, says: &str) -> Output {
    let o = run(bin, args);
    assert_eq!(o.code, code, "{bin} {args:?}: {}", o.stderr);
    assert!(
        o.stderr.contains(says) || o.stdout.contains(says),
        "{bin} {args:?} does not say {says:?}: {}{}",
        o.stdout,
        o.stderr
    );
    o
}

pub fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::write(path, bytes).unwrap();
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}
