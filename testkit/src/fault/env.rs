// SPDX-License-Identifier: GPL-2.0-only

//! The devices of a fault scenario (the origin, the COW slice of the
//! scratch device, the snapshot and snapshot-origin devices over them) and
//! its starting point.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::Duration;
use std::time::Instant;

use super::CHUNK;
use super::CHUNK_BYTES;
use super::LAYOUT;
use super::ORIGIN_BYTES;
use super::ORIGIN_SECTORS;
use super::SECTOR;
use crate::blockdev::open_direct;
use crate::blockdev::read_all;
use crate::blockdev::write_all;
use crate::blockdev::AlignedBuf;
use crate::dm::Control;
use crate::dm::Device;
use crate::dm::Target;
use crate::tag::Rng;

/// The COW slice of the scratch device.
pub(super) const COW: &str = "fault-cow";
/// The snapshot device.
pub(super) const SNAP: &str = "fault-snap";
/// The snapshot-origin device.
pub(super) const ORIGIN: &str = "fault-origin";

/// One target of `kind` over the first `len` sectors.
pub(super) fn tgt<'a>(len: u64, kind: &'a str, params: &'a str) -> Target<'a> {
    Target {
        start: 0,
        len,
        kind,
        params,
    }
}

/// `len` bytes of a pattern named by `seed`.
pub(super) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Removes device `name` if it exists.
pub(super) fn remove(ctl: &Control, name: &str) -> io::Result<()> {
    match ctl.remove(name) {
        Err(_) if ctl.last_errno() == libc::ENXIO => Ok(()),
        r => r,
    }
}

/// The devices: the origin, and the COW slice of the scratch device.
pub(super) struct Env {
    pub(super) ctl: Control,
    origin: PathBuf,
    pub(super) scratch: PathBuf,
    cow_node: PathBuf,
    pub(super) cow_len: u64,
    /// The snapshot device after a refused table load: it never had a
    /// table, so the next load goes to it instead of a new device (the
    /// allocation scenarios refuse most loads; a device creation and
    /// removal per point is most of a point's time under TCG).
    kept: Cell<Option<Device>>,
}

/// One scenario's starting point: what the devices hold, and what the
/// snapshot shows.
pub(super) struct Saved {
    pub(super) origin: Vec<u8>,
    pub(super) cow: Vec<u8>,
    pub(super) view: Vec<u8>,
}

impl Env {
    /// Makes the COW slice of `cow_len` bytes of `scratch`, after removing
    /// any device a run before left behind.
    pub(super) fn new(origin: &Path, scratch: &Path, cow_len: u64) -> io::Result<Self> {
        let ctl = Control::open()?;
        for n in [SNAP, ORIGIN, COW] {
            remove(&ctl, n)?;
        }
        let s = scratch.display().to_string();
        let params = format!("{s} 0");
        let dev = ctl.create(COW)?;
        ctl.load(COW, &[tgt(cow_len / SECTOR, "linear", &params)])?;
        ctl.resume(COW)?;
        Ok(Self {
            ctl,
            origin: origin.to_path_buf(),
            scratch: scratch.to_path_buf(),
            cow_node: dev.node(),
            cow_len,
            kept: Cell::new(None),
        })
    }

    /// Device `name` with no table: the kept snapshot device, or a new one.
    pub(super) fn device(&self, name: &str) -> io::Result<Device> {
        if name == SNAP {
            if let Some(d) = self.kept.take() {
                return Ok(d);
            }
        }
        self.ctl.create(name)
    }

    /// Keeps the snapshot device `d`, whose table load was refused, for the
    /// next load.
    pub(super) fn keep(&self, d: Device) {
        self.kept.set(Some(d));
    }

    /// Creates device `name` with one target of `kind`.
    fn table(&self, name: &str, kind: &str, params: &str) -> io::Result<PathBuf> {
        let dev = self.device(name)?;
        match self
            .ctl
            .load(name, &[tgt(ORIGIN_SECTORS, kind, params)])
            .and_then(|()| self.ctl.resume(name))
        {
            Ok(()) => Ok(dev.node()),
            Err(e) => {
                let errno = self.ctl.last_errno();
                let _ = remove(&self.ctl, name);
                Err(io::Error::from_raw_os_error(if errno != 0 {
                    errno
                } else {
                    e.raw_os_error().unwrap_or(libc::EIO)
                }))
            }
        }
    }

    /// The parameters of a persistent snapshot of the origin on the COW
    /// slice.
    pub(super) fn snapshot_params(&self) -> String {
        format!(
            "{} {} P {CHUNK}",
            self.origin.display(),
            self.cow_node.display()
        )
    }

    /// Creates the snapshot device; its node.
    pub(super) fn snapshot(&self) -> io::Result<PathBuf> {
        self.table(SNAP, "snapshot", &self.snapshot_params())
    }

    /// Creates the snapshot-origin device; its node.
    pub(super) fn origin_dev(&self) -> io::Result<PathBuf> {
        self.table(
            ORIGIN,
            "snapshot-origin",
            &self.origin.display().to_string(),
        )
    }

    /// Creates the snapshot device as a snapshot-merge; its node.
    pub(super) fn merge(&self) -> io::Result<PathBuf> {
        self.table(SNAP, "snapshot-merge", &self.snapshot_params())
    }

    /// The status line of device `name`, or why there is none.
    pub(super) fn status(&self, name: &str) -> String {
        self.ctl
            .status(name)
            .unwrap_or_else(|e| format!("(status failed: {e})"))
    }

    /// Removes the snapshot (unless kept: it has no table) and origin devices.
    pub(super) fn teardown(&self) -> io::Result<()> {
        let kept = self.kept.take();
        if kept.is_none() {
            remove(&self.ctl, SNAP)?;
        }
        self.kept.set(kept);
        remove(&self.ctl, ORIGIN)
    }

    /// Removes every device of the scenario but the COW device.
    pub(super) fn teardown_all(&self) -> io::Result<()> {
        self.kept.set(None);
        remove(&self.ctl, SNAP)?;
        remove(&self.ctl, ORIGIN)
    }

    /// Writes the starting point `s` back to the devices.
    pub(super) fn restore(&self, s: &Saved) -> io::Result<()> {
        write_all(&open_direct(&self.origin, true)?, 0, &s.origin)?;
        write_all(&open_direct(&self.scratch, true)?, 0, &s.cow)
    }

    /// What the origin holds.
    pub(super) fn read_origin(&self) -> io::Result<Vec<u8>> {
        read_all(&open_direct(&self.origin, false)?, 0, ORIGIN_BYTES)
    }

    /// What the COW slice holds.
    pub(super) fn read_cow(&self) -> io::Result<Vec<u8>> {
        read_all(
            &open_direct(&self.scratch, false)?,
            0,
            self.cow_len as usize,
        )
    }

    /// Polls a merging snapshot until its merge is done or has failed;
    /// returns its last status.
    pub(super) fn wait_merged(&self) -> String {
        let start = Instant::now();
        loop {
            let st = self.status(SNAP);
            let mut w = st.split_whitespace();
            let done = st.contains("Merge failed")
                || st.contains("Invalid")
                || match (w.next(), w.next()) {
                    (Some(a), Some(m)) => a.split('/').next() == Some(m),
                    _ => true,
                };
            if done || start.elapsed() > Duration::from_secs(30) {
                return st;
            }
            sleep(Duration::from_millis(50));
        }
    }
}

/// `data` written at chunk `chunk` of `dev` (one O_DIRECT write).
pub(super) fn write_chunk(dev: &File, chunk: u64, data: &[u8]) -> io::Result<()> {
    let mut buf = AlignedBuf::new(CHUNK_BYTES);
    buf.copy_from_slice(data);
    dev.write_all_at(&buf, chunk * CHUNK_BYTES as u64)
}

/// The chunk of the `i`-th write of a scenario: spread over the origin.
pub(super) fn chunk_of(i: u64) -> u64 {
    (i * 37 + 5) % LAYOUT.device_chunks(ORIGIN_SECTORS)
}

/// `data` put at chunk `chunk` of the image `img`.
pub(super) fn put_chunk(img: &mut [u8], chunk: u64, data: &[u8]) {
    let at = chunk as usize * CHUNK_BYTES;
    img[at..at + CHUNK_BYTES].copy_from_slice(data);
}

/// The scenario's starting point: a new store over a zeroed COW device
/// with `origin_writes` exceptions of origin writes and `snap_writes` of
/// snapshot writes.
pub(super) fn prepare(
    env: &Env,
    seed: u64,
    origin_writes: u64,
    snap_writes: u64,
) -> io::Result<Saved> {
    let origin = pattern(seed, ORIGIN_BYTES);
    let zero = vec![0u8; env.cow_len as usize];
    let mut s = Saved {
        origin: origin.clone(),
        cow: zero,
        view: origin,
    };
    env.restore(&s)?;
    let snap = env.snapshot()?;
    let o = env.origin_dev()?;
    let of = open_direct(&o, true)?;
    let sf = open_direct(&snap, true)?;
    for i in 0..origin_writes {
        write_chunk(&of, chunk_of(i), &pattern(seed + 1000 + i, CHUNK_BYTES))?;
    }
    for i in 0..snap_writes {
        let data = pattern(seed + 5000 + i, CHUNK_BYTES);
        let c = chunk_of(origin_writes + i);
        write_chunk(&sf, c, &data)?;
        put_chunk(&mut s.view, c, &data);
    }
    drop((of, sf));
    let st = env.status(SNAP);
    env.teardown()?;
    if st.contains("Invalid") || st.contains("Overflow") {
        return Err(io::Error::other(format!(
            "preparing the scenario: snapshot {st}"
        )));
    }
    s.origin = env.read_origin()?;
    s.cow = env.read_cow()?;
    Ok(s)
}
