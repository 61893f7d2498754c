// SPDX-License-Identifier: GPL-2.0

//! Device-mapper support: dm-io, dm-bufio and dm-snapshot exception stores.
//!
//! dm and its helper modules are loadable modules in distribution kernels,
//! while the `kernel` crate is linked into vmlinux, which may not call into
//! them; so these abstractions are compiled into the module that uses them.
//! They follow the `kernel` crate's rules so that they can move there once
//! that is possible.
//!
//! C headers: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h),
//! [`include/linux/dm-io.h`](srctree/include/linux/dm-io.h),
//! [`include/linux/dm-bufio.h`](srctree/include/linux/dm-bufio.h),
//! [`drivers/md/dm-exception-store.h`](srctree/drivers/md/dm-exception-store.h)

pub mod bufio;
pub mod exception_store;
pub mod io;

use core::fmt;
use kernel::str::CStr;

/// The prefix of a device-mapper module's messages: `DM_NAME ": "
/// DM_MSG_PREFIX`, as `DMERR()` and friends print it. Make one with
/// [`dm_msg_prefix!`](crate::dm_msg_prefix).
///
/// # Examples
///
/// ```
/// use crate::device_mapper::MsgPrefix;
///
/// const PREFIX: MsgPrefix = crate::dm_msg_prefix!("example");
/// const _: () = core::assert!(PREFIX.is_for("example"));
/// assert!(!PREFIX.is_for("exampl"));
/// // Logs "device-mapper: example: 3 exceptions".
/// crate::dm_info!(PREFIX, "{} exceptions", 3);
/// ```
pub struct MsgPrefix(&'static CStr);

impl MsgPrefix {
    /// Returns the prefix `full`, which should start with `"device-mapper: "`.
    pub const fn new(full: &'static CStr) -> Self {
        Self(full)
    }

    /// Whether this is the prefix of the `DM_MSG_PREFIX` `name`, so that a
    /// module can check at compile time that its prefix is the one a shared
    /// constant names: `const _: () = assert!(PREFIX.is_for(NAME));`.
    pub const fn is_for(&self, name: &str) -> bool {
        let full = self.0.to_bytes();
        let name = name.as_bytes();
        let head = DM_NAME_PREFIX.len();
        if full.len() != head + name.len() {
            return false;
        }
        let mut i = 0;
        while i < full.len() {
            let want = if i < head {
                DM_NAME_PREFIX[i]
            } else {
                name[i - head]
            };
            if full[i] != want {
                return false;
            }
            i += 1;
        }
        true
    }
}

/// What every device-mapper message starts with: `DM_NAME ": "`.
const DM_NAME_PREFIX: &[u8] = b"device-mapper: ";

/// The severity of a device-mapper message.
///
/// # Examples
///
/// ```
/// use crate::device_mapper::{print, Level, MsgPrefix};
///
/// const PREFIX: MsgPrefix = crate::dm_msg_prefix!("example");
/// print(Level::Info, &PREFIX, format_args!("{} of {}\n", 1, 2));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Level {
    /// `DMERR()`: `KERN_ERR`.
    Err,
    /// `DMWARN()`: `KERN_WARNING`.
    Warn,
    /// `DMINFO()`: `KERN_INFO`.
    Info,
}

/// Prints `"<prefix>: <args>"` at `level`, the way `DMERR()`, `DMWARN()`
/// and `DMINFO()` do: messages that tools and people grep for keep their C
/// form. The [`dm_err!`](crate::dm_err) family of macros calls this.
pub fn print(level: Level, prefix: &MsgPrefix, args: fmt::Arguments<'_>) {
    let format = match level {
        Level::Err => &kernel::print::format_strings::ERR,
        Level::Warn => &kernel::print::format_strings::WARNING,
        Level::Info => &kernel::print::format_strings::INFO,
    };
    // SAFETY: `format` is one of `format_strings`, and the prefix is a
    // `CStr`, so its bytes with the NUL are NUL-terminated.
    unsafe { kernel::print::call_printk(format, prefix.0.to_bytes_with_nul(), args) };
}

/// Defines the [`MsgPrefix`] of a device-mapper module:
/// `dm_msg_prefix!("persistent snapshot")` is C's `DM_MSG_PREFIX`.
#[macro_export]
macro_rules! dm_msg_prefix {
    ($prefix:literal) => {
        $crate::device_mapper::MsgPrefix::new(::kernel::c_str!(concat!("device-mapper: ", $prefix)))
    };
}

/// Prints an error like `DMERR()`: `dm_err!(PREFIX, "format", args...)`.
#[macro_export]
macro_rules! dm_err {
    ($prefix:expr, $fmt:literal $($arg:tt)*) => {
        $crate::device_mapper::print(
            $crate::device_mapper::Level::Err,
            &$prefix,
            format_args!(concat!($fmt, "\n") $($arg)*),
        )
    };
}

/// Prints a warning like `DMWARN()`.
#[macro_export]
macro_rules! dm_warn {
    ($prefix:expr, $fmt:literal $($arg:tt)*) => {
        $crate::device_mapper::print(
            $crate::device_mapper::Level::Warn,
            &$prefix,
            format_args!(concat!($fmt, "\n") $($arg)*),
        )
    };
}

/// Prints a notice like `DMINFO()`.
#[macro_export]
macro_rules! dm_info {
    ($prefix:expr, $fmt:literal $($arg:tt)*) => {
        $crate::device_mapper::print(
            $crate::device_mapper::Level::Info,
            &$prefix,
            format_args!(concat!($fmt, "\n") $($arg)*),
        )
    };
}
