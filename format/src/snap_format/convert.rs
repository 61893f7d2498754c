// SPDX-License-Identifier: GPL-2.0-only

//! Small conversion helpers (no `as`): integer widths and little-endian
//! fields of byte buffers.

/// `u32` to `usize`; `None` only on targets with a 16-bit `usize`.
pub(super) fn usize_of(v: u32) -> Option<usize> {
    usize::try_from(v).ok()
}

pub(super) fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let b: [u8; 4] = bytes.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

pub(super) fn le64(bytes: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(8)?;
    let b: [u8; 8] = bytes.get(at..end)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

pub(super) fn put(bytes: &mut [u8], at: usize, value: &[u8]) -> Option<()> {
    let end = at.checked_add(value.len())?;
    bytes.get_mut(at..end)?.copy_from_slice(value);
    Some(())
}
