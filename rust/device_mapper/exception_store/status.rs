// SPDX-License-Identifier: GPL-2.0

//! Status output of an exception store.
//!
//! C header: [`drivers/md/dm-exception-store.h`](srctree/drivers/md/dm-exception-store.h)

use core::mem::MaybeUninit;

/// Which status dm asks for (`status_type_t`).
///
/// # Examples
///
/// ```
/// use core::fmt::Write;
/// use crate::device_mapper::exception_store::{StatusType, StatusWriter};
///
/// // The persistent store's table arguments: " P 16", or " PO 16".
/// fn table(kind: StatusType, overflow: bool, chunk: u32, out: &mut StatusWriter<'_>) {
///     if kind == StatusType::Table {
///         let _ = write!(out, " {} {}", if overflow { "PO" } else { "P" }, chunk);
///     }
/// }
/// let mut buf = [0u8; 16];
/// table(StatusType::Table, true, 16, &mut StatusWriter::new(&mut buf));
/// assert!(buf.starts_with(b" PO 16\0"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StatusType {
    /// `STATUSTYPE_INFO` (`dmsetup status`).
    Info,
    /// `STATUSTYPE_TABLE` (`dmsetup table`): the store's table arguments.
    Table,
    /// `STATUSTYPE_IMA`: what IMA measures.
    Ima,
}

/// A writer for status output with the semantics of `DMEMIT`: output past
/// the buffer is cut, and the buffer is always NUL-terminated.
///
/// dm hands the store a buffer it only promises to be writable, so the
/// writer holds it as possibly uninitialised bytes, and only writes them.
///
/// # Examples
///
/// ```
/// use core::fmt::Write;
/// use crate::device_mapper::exception_store::StatusWriter;
///
/// let mut buf = [0xffu8; 8];
/// let mut out = StatusWriter::new(&mut buf);
/// write!(out, " P {}", 1024)?; // cut to the 7 bytes that fit
/// assert_eq!(&buf, b" P 1024\0");
/// ```
///
/// # Invariants
///
/// `len < buf.len()` unless `buf` is empty (`len` is then 0), `buf[..len]`
/// holds the text written and `buf[len]` a NUL; the writer writes only
/// initialised bytes through `buf`, so a buffer lent as `&mut [u8]` holds
/// initialised bytes again when the writer's borrow ends.
pub struct StatusWriter<'a> {
    buf: &'a mut [MaybeUninit<u8>],
    len: usize,
}

impl<'a> StatusWriter<'a> {
    /// Returns a writer to `buf`, emptied (a NUL at its start).
    pub fn new(buf: &'a mut [u8]) -> Self {
        let len = buf.len();
        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and
        // the writer stores only initialised bytes through the slice, so
        // `buf` holds initialised bytes when the borrow ends.
        let buf = unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast(), len) };
        Self::from_uninit(buf)
    }

    /// Returns a writer to a buffer that may be uninitialised, emptied (a
    /// NUL at its start).
    pub(super) fn from_uninit(buf: &'a mut [MaybeUninit<u8>]) -> Self {
        if let Some(first) = buf.first_mut() {
            first.write(0);
        }
        Self { buf, len: 0 }
    }

    /// The number of bytes written, not counting the NUL.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::fmt::Write for StatusWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // Room for text: the buffer less the NUL.
        let room = self.buf.len().saturating_sub(1).saturating_sub(self.len);
        let n = s.len().min(room);
        let end = self.len.saturating_add(n);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..end), s.as_bytes().get(..n)) {
            for (d, c) in dst.iter_mut().zip(src) {
                d.write(*c);
            }
            self.len = end;
        }
        if let Some(nul) = self.buf.get_mut(self.len) {
            nul.write(0);
        }
        Ok(())
    }
}
