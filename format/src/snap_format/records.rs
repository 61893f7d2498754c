// SPDX-License-Identifier: GPL-2.0-only

//! Exception records: one exception, its 16-byte on-disk encoding, and
//! its reading and writing inside an area buffer.

use super::convert::{
    le64,
    put,
    usize_of, //
};

/// Size in bytes of one on-disk exception record.
///
/// C: `sizeof(struct disk_exception)`.
pub const DISK_EXCEPTION_SIZE: usize = 16;

/// Byte offset of exception `index` inside an area.
pub(super) fn exception_offset(index: u32) -> Option<usize> {
    usize_of(index)?.checked_mul(DISK_EXCEPTION_SIZE)
}

/// One exception: `old_chunk` of the origin is saved in `new_chunk` of the
/// COW device.
///
/// C: `struct core_exception` (and `struct disk_exception` on disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Exception {
    /// Chunk of the origin. C: `old_chunk`.
    pub old_chunk: u64,
    /// Chunk of the COW device. C: `new_chunk`.
    pub new_chunk: u64,
}

impl Exception {
    /// Decodes a 16-byte record.
    ///
    /// C: `read_exception()`.
    pub fn decode(record: &[u8; DISK_EXCEPTION_SIZE]) -> Self {
        // Both reads are inside the 16-byte array; the fallbacks are dead.
        Self {
            old_chunk: le64(record, 0).unwrap_or(0),
            new_chunk: le64(record, 8).unwrap_or(0),
        }
    }

    /// Encodes as a 16-byte record.
    ///
    /// C: `write_exception()`.
    pub fn encode(&self) -> [u8; DISK_EXCEPTION_SIZE] {
        let mut out = [0u8; DISK_EXCEPTION_SIZE];
        let (old, new) = (self.old_chunk.to_le_bytes(), self.new_chunk.to_le_bytes());
        for (dst, src) in out.iter_mut().zip(old.iter().chain(new.iter())) {
            *dst = *src;
        }
        out
    }

    /// Whether this record ends an area (`new_chunk == 0`).
    ///
    /// C: the `e.new_chunk == 0LL` test in `insert_exceptions()`.
    pub const fn is_end_marker(&self) -> bool {
        self.new_chunk == 0
    }
}

/// Reads exception `index` of an area buffer; `None` if the record lies
/// outside `area`.
///
/// C: `read_exception()`.
pub fn read_exception(area: &[u8], index: u32) -> Option<Exception> {
    let at = exception_offset(index)?;
    let end = at.checked_add(DISK_EXCEPTION_SIZE)?;
    let record: &[u8; DISK_EXCEPTION_SIZE] = area.get(at..end)?.try_into().ok()?;
    Some(Exception::decode(record))
}

/// Writes exception `index` of an area buffer; `None` (and nothing
/// written) if the record lies outside `area`.
///
/// C: `write_exception()`.
pub fn write_exception(area: &mut [u8], index: u32, e: Exception) -> Option<()> {
    put(area, exception_offset(index)?, &e.encode())
}

/// Zeroes exception `index` of an area buffer; `None` (and nothing written)
/// if the record lies outside `area`.
///
/// C: `clear_exception()`.
pub fn clear_exception(area: &mut [u8], index: u32) -> Option<()> {
    put(area, exception_offset(index)?, &[0u8; DISK_EXCEPTION_SIZE])
}
