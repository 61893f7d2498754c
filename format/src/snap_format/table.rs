// SPDX-License-Identifier: GPL-2.0-only

//! Table options and status: the store options after `P` and the store's
//! part of the table status line.

use super::error::errno;
use core::fmt;

/// An unsupported persistent store option.
///
/// C: `persistent_ctr()`, `DMERR` "Unsupported persistent store option:
/// %s", `-EINVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnsupportedOption<'a> {
    /// The option string as given.
    pub options: &'a [u8],
}

impl UnsupportedOption<'_> {
    /// Positive errno: `EINVAL` (C: `-EINVAL` from `persistent_ctr()`).
    pub const fn errno(&self) -> i32 {
        errno::EINVAL
    }
}

impl fmt::Display for UnsupportedOption<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Unsupported persistent store option: {}",
            self.options.escape_ascii()
        )
    }
}

/// Parses the store options: the characters after `P` in the table's store
/// type (`None` when there are none). Returns whether userspace supports
/// overflow (`O`, either case; like C only the first character counts).
///
/// C: the `options` handling of `persistent_ctr()`.
///
/// # Errors
///
/// [`UnsupportedOption`] when the first character is not `O`/`o`.
pub fn parse_options(options: Option<&[u8]>) -> Result<bool, UnsupportedOption<'_>> {
    match options {
        None => Ok(false),
        Some(o) => match o.first() {
            Some(b'O' | b'o') => Ok(true),
            _ => Err(UnsupportedOption { options: o }),
        },
    }
}

/// The store's part of the table status line: `" P <chunk_size>"` or
/// `" PO <chunk_size>"`.
///
/// C: the `STATUSTYPE_TABLE` case of `persistent_status()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableStatus {
    /// C: `store->userspace_supports_overflow`.
    pub userspace_supports_overflow: bool,
    /// C: `store->chunk_size`, in sectors, printed as it is.
    pub chunk_size: u32,
}

impl fmt::Display for TableStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.userspace_supports_overflow {
            "PO"
        } else {
            "P"
        };
        write!(f, " {} {}", kind, self.chunk_size)
    }
}
