// SPDX-License-Identifier: GPL-2.0-only

//! A minimal device-mapper client speaking the ioctl interface of
//! `/dev/mapper/control` (include/uapi/linux/dm-ioctl.h), so that the replay
//! creates and removes hundreds of devices without starting `dmsetup` for
//! each (slow under an emulated CPU).
//!
//! Every command sends a `struct dm_ioctl` (312 bytes) followed by its
//! payload in one buffer: target specs and their parameter strings for a
//! table load, a `struct dm_target_msg` for a message; status text comes
//! back the same way.

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::Duration;

const HEADER: usize = 312;
const NAME_LEN: usize = 128;
const SPEC: usize = 40;
const BUF: usize = 16384;

const DM_DEV_CREATE: u32 = 3;
const DM_DEV_REMOVE: u32 = 4;
const DM_DEV_SUSPEND: u32 = 6;
const DM_TABLE_LOAD: u32 = 9;
const DM_TABLE_STATUS: u32 = 12;
const DM_TARGET_MSG: u32 = 14;

const DM_SUSPEND_FLAG: u32 = 1 << 1;

/// udev flags passed in the high half of `event_nr` (the uevent's
/// `DM_COOKIE`), as libdevmapper does: skip the dm, subsystem, disk and
/// other rules, so udev does not probe (open) the device and a remove right
/// after does not find it busy. The low half, a semaphore id, stays 0: no
/// one waits for udev.
const UDEV_QUIET: u32 = 0x000f << 16;
const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;

const fn request(nr: u32) -> u64 {
    // _IOWR(0xfd, nr, struct dm_ioctl)
    (3u64 << 30) | ((HEADER as u64) << 16) | (0xfd << 8) | nr as u64
}

/// An open `/dev/mapper/control`.
pub struct Control {
    file: File,
    busy: std::sync::atomic::AtomicU64,
    errno: std::sync::atomic::AtomicI32,
}

/// A device created by [`Control::create`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Its name.
    pub name: String,
    /// Its minor number: the node is `/dev/dm-<minor>`.
    pub minor: u32,
}

impl Device {
    /// The devtmpfs node of the device.
    pub fn node(&self) -> PathBuf {
        PathBuf::from(format!("/dev/dm-{}", self.minor))
    }
}

/// One line of a table: start, length (sectors), target type, parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub len: u64,
    /// Target type (`snapshot`, `linear`...).
    pub kind: &'a str,
    /// Its parameters.
    pub params: &'a str,
}

/// A command buffer: `struct dm_ioctl` and its payload, BUF bytes.
struct Buf(Vec<u8>);

impl Buf {
    fn new(name: &str) -> io::Result<Self> {
        let mut b = Self(vec![0u8; BUF]);
        if name.len() >= NAME_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "dm name too long",
            ));
        }
        b.put_u32(0, 4); // version 4.0.0
        b.put_u32(12, BUF as u32); // data_size
        b.put_u32(16, HEADER as u32); // data_start
        b.bytes_mut()[48..48 + name.len()].copy_from_slice(name.as_bytes());
        Ok(b)
    }
    fn bytes(&self) -> &[u8] {
        &self.0
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn put_u32(&mut self, at: usize, v: u32) {
        self.bytes_mut()[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, at: usize, v: u64) {
        self.bytes_mut()[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn u32_at(&self, at: usize) -> u32 {
        let b = self.bytes();
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }
    fn u64_at(&self, at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.bytes()[at..at + 8]);
        u64::from_le_bytes(w)
    }
    fn cstr_at(&self, at: usize) -> String {
        let b = &self.bytes()[at.min(BUF)..];
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    }
}

impl Control {
    /// Opens `/dev/mapper/control`.
    ///
    /// # Errors
    ///
    /// The open error.
    pub fn open() -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/mapper/control")?;
        Ok(Self {
            file,
            busy: std::sync::atomic::AtomicU64::new(0),
            errno: std::sync::atomic::AtomicI32::new(0),
        })
    }

    /// The one system call of the test kit that Rust cannot check.
    #[allow(unsafe_code)]
    fn ioctl(&self, nr: u32, b: &mut Buf, what: &str) -> io::Result<()> {
        // SAFETY: `b.0` is a live, exclusively borrowed buffer of BUF bytes,
        // and its `data_size` field (set by `Buf::new`, never changed) says
        // BUF: the kernel copies in and out of at most that many bytes
        // (with copy_from_user/copy_to_user, so no alignment is needed),
        // and keeps no pointer to it after the call. The file descriptor
        // is `/dev/mapper/control`, open for as long as `self`.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), request(nr) as _, b.0.as_mut_ptr()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            self.errno.store(
                e.raw_os_error().unwrap_or(0),
                std::sync::atomic::Ordering::Relaxed,
            );
            return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
        }
        Ok(())
    }

    /// Creates a device with no table.
    ///
    /// # Errors
    ///
    /// The ioctl's error.
    pub fn create(&self, name: &str) -> io::Result<Device> {
        let mut b = Buf::new(name)?;
        self.ioctl(DM_DEV_CREATE, &mut b, &format!("create {name}"))?;
        let dev = b.u64_at(40);
        let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff_ff00)) as u32;
        Ok(Device {
            name: name.to_string(),
            minor,
        })
    }

    /// Loads a table into the device's inactive slot.
    ///
    /// # Errors
    ///
    /// The ioctl's error (the target's constructor refused the table).
    pub fn load(&self, name: &str, targets: &[Target<'_>]) -> io::Result<()> {
        let mut b = Buf::new(name)?;
        b.put_u32(20, targets.len() as u32);
        let mut at = HEADER;
        for t in targets {
            let next = (SPEC + t.params.len() + 1).next_multiple_of(8);
            if at + next > BUF || t.kind.len() >= 16 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "table too large",
                ));
            }
            b.put_u64(at, t.start);
            b.put_u64(at + 8, t.len);
            b.put_u32(at + 20, next as u32);
            b.bytes_mut()[at + 24..at + 24 + t.kind.len()].copy_from_slice(t.kind.as_bytes());
            b.bytes_mut()[at + SPEC..at + SPEC + t.params.len()]
                .copy_from_slice(t.params.as_bytes());
            at += next;
        }
        self.ioctl(DM_TABLE_LOAD, &mut b, &format!("load {name}"))
    }

    /// Resumes the device (making a loaded table live).
    ///
    /// # Errors
    ///
    /// The ioctl's error.
    pub fn resume(&self, name: &str) -> io::Result<()> {
        let mut b = Buf::new(name)?;
        b.put_u32(32, UDEV_QUIET);
        self.ioctl(DM_DEV_SUSPEND, &mut b, &format!("resume {name}"))
    }

    /// Suspends the device.
    ///
    /// # Errors
    ///
    /// The ioctl's error.
    pub fn suspend(&self, name: &str) -> io::Result<()> {
        let mut b = Buf::new(name)?;
        b.put_u32(28, DM_SUSPEND_FLAG);
        self.ioctl(DM_DEV_SUSPEND, &mut b, &format!("suspend {name}"))
    }

    /// Removes the device, retrying for a while when it is busy (something
    /// may hold it open for a moment after it appeared).
    ///
    /// # Errors
    ///
    /// The ioctl's error.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let mut tries = 0;
        loop {
            let mut b = Buf::new(name)?;
            b.put_u32(32, UDEV_QUIET);
            match self.ioctl(DM_DEV_REMOVE, &mut b, &format!("remove {name}")) {
                Err(e) if e.kind() == io::ErrorKind::ResourceBusy && tries < 200 => {
                    tries += 1;
                    self.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    sleep(Duration::from_millis(25));
                }
                r => return r,
            }
        }
    }

    /// The errno of the last command that failed.
    pub fn last_errno(&self) -> i32 {
        self.errno.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many times a remove found its device busy and waited.
    pub fn busy_retries(&self) -> u64 {
        self.busy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The status line of the device's (first) target, as `dmsetup status`
    /// prints after the start, length and type.
    ///
    /// # Errors
    ///
    /// The ioctl's error.
    pub fn status(&self, name: &str) -> io::Result<String> {
        let mut b = Buf::new(name)?;
        self.ioctl(DM_TABLE_STATUS, &mut b, &format!("status {name}"))?;
        if b.u32_at(28) & DM_BUFFER_FULL_FLAG != 0 {
            return Err(io::Error::other("status: buffer full"));
        }
        if b.u32_at(20) == 0 {
            return Ok(String::new());
        }
        let start = b.u32_at(16) as usize;
        Ok(b.cstr_at(start + SPEC))
    }

    /// Sends a message to the target at sector 0
    /// (`dmsetup message <name> 0 <text>`).
    ///
    /// # Errors
    ///
    /// The ioctl's error.
    pub fn message(&self, name: &str, text: &str) -> io::Result<()> {
        let mut b = Buf::new(name)?;
        if HEADER + 8 + text.len() + 1 > BUF {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "message too long",
            ));
        }
        b.put_u64(HEADER, 0);
        b.bytes_mut()[HEADER + 8..HEADER + 8 + text.len()].copy_from_slice(text.as_bytes());
        self.ioctl(DM_TARGET_MSG, &mut b, &format!("message {name} {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_iowr_of_the_dm_ioctl_struct() {
        // DM_DEV_CREATE as the kernel headers spell it: 0xc138fd03.
        assert_eq!(request(DM_DEV_CREATE), 0xc138_fd03);
        assert_eq!(request(DM_TARGET_MSG), 0xc138_fd0e);
    }

    #[test]
    fn buffers_carry_version_sizes_and_name() {
        let b = Buf::new("crash-snap").unwrap();
        assert_eq!(b.u32_at(0), 4);
        assert_eq!(b.u32_at(12) as usize, BUF);
        assert_eq!(b.u32_at(16) as usize, HEADER);
        assert_eq!(b.cstr_at(48), "crash-snap");
        assert!(Buf::new(&"x".repeat(200)).is_err());
    }
}
