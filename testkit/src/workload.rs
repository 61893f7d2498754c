// SPDX-License-Identifier: GPL-2.0-only

//! The writes of the crash-replay test and the helpers of the guest tests,
//! behind `crash_workload`, generated in bulk (a shell loop is far too slow
//! under an emulated CPU).
//!
//! ```text
//! crash_workload fill DEV [BYTES]
//!     pattern blocks over DEV (its first BYTES), then a flush
//! crash_workload garbage COW CHUNK_SECTORS RECORDS
//!     a zero header and RECORDS old exception records in area 0, pointing
//!     at garbage-filled chunks, then a flush
//! crash_workload write LOGDEV ORIGIN|- SNAPSHOT|- COUNT QD SEED FIRST_ID RANGE
//!     COUNT random 4 KiB O_DIRECT writes within the first RANGE bytes,
//!     to the origin device, the snapshot device, or both (each write picks
//!     one at random when both are given), QD at a time; after each write
//!     completes, `mark ack-<id>` to the log-writes device LOGDEV. Two
//!     writes to the same block of the same device are never in flight
//!     together (the second waits for the first's mark), so the marks give
//!     the order in which writes to one block reached the device.
//! crash_workload mark LOGDEV TEXT
//!     a mark in the log
//! crash_workload permutation-dump N PER_AREA MUL COW_SECTORS
//!     to stdout, a snap_dump of N exceptions at 4 KiB chunks: exception i
//!     maps origin chunk (i * MUL) mod N (a permutation when MUL and N are
//!     coprime) to the i-th data chunk of the COW device in the store's
//!     allocation order; PER_AREA must be the exceptions per area of 4 KiB
//!     chunks, 256
//! crash_workload random-dump N PER_AREA COW_SECTORS
//!     the same with random 50-bit origin chunks
//! crash_workload dm create NAME TABLE | reload NAME TABLE | suspend NAME |
//!                   resume NAME | status NAME | remove NAME... |
//!                   wait-merged NAME
//!     device-mapper commands without dmsetup (much cheaper to start under
//!     an emulated CPU): create prints the device's /dev/dm-N node; TABLE
//!     is one line "START LENGTH TYPE PARAMS"; remove skips names that do
//!     not exist; wait-merged polls a snapshot-merge device until its
//!     merge is done and prints its status
//! ```

#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Condvar;
use std::sync::Mutex;

use snap_format::write_exception;
use snap_format::BlockSizes;
use snap_format::ChunkSize;
use snap_format::Exception;
use snap_format::Layout;
use snap_format::INITIAL_NEXT_FREE;
use snap_format::SECTOR_SIZE;
use snap_format::SNAPSHOT_DISK_VERSION;

use crate::blockdev::open_direct;
use crate::blockdev::size;
use crate::blockdev::AlignedBuf;
use crate::dm::Control;
use crate::dm::Target;
use crate::tag::Kind;
use crate::tag::Tag;
use crate::tag::BLOCK;

/// The usage message, as an error of kind `InvalidInput`.
pub fn usage() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "usage: crash_workload fill DEV [BYTES] | garbage COW CHUNK_SECTORS RECORDS | \
         write LOGDEV ORIGIN|- SNAPSHOT|- COUNT QD SEED FIRST_ID RANGE | mark LOGDEV TEXT | \
         permutation-dump N PER_AREA MUL COW_SECTORS | random-dump N PER_AREA COW_SECTORS | \
         dm create|reload NAME TABLE | dm suspend|resume|status|wait-merged NAME | dm remove NAME...",
    )
}

/// A 64-bit mix (the finaliser of MurmurHash3).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Bytes in a sector.
const SECTOR: u64 = SECTOR_SIZE as u64;

/// The data chunks of a store of `layout`, in the order the store
/// allocates them: from [`INITIAL_NEXT_FREE`] on, skipping the metadata
/// areas.
fn data_chunks(layout: Layout) -> impl Iterator<Item = u64> {
    std::iter::successors(Some(INITIAL_NEXT_FREE), move |&c| {
        layout.skip_metadata(c.checked_add(1)?)
    })
}

/// `fill`: pattern blocks over `dev` (its first `bytes`), then a flush.
///
/// # Errors
///
/// The device's.
pub fn fill(dev: &Path, bytes: Option<u64>) -> io::Result<()> {
    let f = open_direct(dev, true)?;
    let len = bytes.unwrap_or(size(&f)?);
    const PIECE: usize = 64 * BLOCK;
    let mut buf = AlignedBuf::new(PIECE);
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(PIECE);
        for (k, b) in buf[..n].chunks_mut(BLOCK).enumerate() {
            Tag {
                kind: Kind::Pattern,
                id: 0,
                offset: at + (k * BLOCK) as u64,
            }
            .fill(b);
        }
        f.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    f.sync_all()
}

/// `garbage`: on `cow`, a zero header chunk and `records` exception
/// records in area 0 (old chunk `i` to the `i`-th data chunk, as many as
/// the area and the device hold with an end marker after them), the
/// chunks they point at filled with garbage, then a flush.
///
/// # Errors
///
/// A chunk size the format does not allow, or the device's.
pub fn garbage(cow: &Path, chunk_sectors: u64, records: u64) -> io::Result<()> {
    let chunk_size = u32::try_from(chunk_sectors)
        .ok()
        .and_then(|s| ChunkSize::new(s, BlockSizes::SECTOR).ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a chunk size: {chunk_sectors} sectors"),
            )
        })?;
    let layout = Layout::new(chunk_size);
    let chunk = layout.chunk_bytes() as usize;
    let sector_of = |c: u64| {
        layout
            .chunk_to_sector(c)
            .ok_or_else(|| io::Error::other("overflow"))
    };
    let f = open_direct(cow, true)?;
    let cow_chunks = layout.device_chunks(size(&f)? / SECTOR);
    // Zero header chunk.
    let zero = AlignedBuf::new(chunk);
    f.write_all_at(&zero, 0)?;
    // Area 0: records old = i, new = the i-th data chunk, then the end
    // marker.
    let mut area = AlignedBuf::new(chunk);
    let per_area = u64::from(layout.exceptions_per_area());
    let n = records.min(per_area - 1).min(cow_chunks.saturating_sub(3));
    let exceptions: Vec<Exception> = (0..n)
        .zip(data_chunks(layout))
        .map(|(old_chunk, new_chunk)| Exception {
            old_chunk,
            new_chunk,
        })
        .collect();
    for (i, &e) in (0u32..).zip(&exceptions) {
        write_exception(&mut area, i, e).ok_or_else(|| io::Error::other("overflow"))?;
    }
    let area0 = layout
        .area_io(0)
        .ok_or_else(|| io::Error::other("overflow"))?;
    f.write_all_at(&area, area0.sector * SECTOR)?;
    // Garbage in the chunks they point at.
    let mut data = AlignedBuf::new(chunk);
    for e in &exceptions {
        let off = sector_of(e.new_chunk)? * SECTOR;
        for (k, b) in data.chunks_mut(BLOCK).enumerate() {
            Tag {
                kind: Kind::Garbage,
                id: 0,
                offset: off + (k * BLOCK) as u64,
            }
            .fill(b);
        }
        f.write_all_at(&data, off)?;
    }
    f.sync_all()
}

/// `mark`: the mark `text` in the log of the log-writes device `log`.
///
/// # Errors
///
/// The device-mapper message's.
pub fn mark(log: &str, text: &str) -> io::Result<()> {
    Control::open()?.message(log, &format!("mark {text}"))
}

/// The writes of `write`.
pub struct WriteJob {
    /// The log-writes device the marks go to.
    pub log: String,
    /// The devices written, with the kind of tag written to each.
    pub devs: Vec<(Kind, File)>,
    /// Writes to make.
    pub count: u64,
    /// The seed of the offsets and devices.
    pub seed: u64,
    /// The id of the first write.
    pub first_id: u64,
    /// Blocks of the range written.
    pub blocks: u64,
}

impl WriteJob {
    /// The job of `count` writes over the first `range` bytes of the
    /// origin and snapshot devices named (`-` or `None`: not written).
    ///
    /// # Errors
    ///
    /// [`usage`] if neither device is named, or a device's open error.
    pub fn new(
        log: &str,
        origin: Option<&str>,
        snapshot: Option<&str>,
        count: u64,
        seed: u64,
        first_id: u64,
        range: u64,
    ) -> io::Result<Self> {
        let mut devs = Vec::new();
        for (k, a) in [(Kind::Origin, origin), (Kind::Snapshot, snapshot)] {
            match a {
                None | Some("-") => {}
                Some(p) => devs.push((k, open_direct(Path::new(p), true)?)),
            }
        }
        if devs.is_empty() {
            return Err(usage());
        }
        Ok(Self {
            log: log.to_string(),
            devs,
            count,
            seed,
            first_id,
            blocks: (range / BLOCK as u64).max(1),
        })
    }
}

/// `write`: the writes of `job`, `qd` at a time, each followed by its
/// mark.
///
/// # Errors
///
/// The first error of a write or a mark.
pub fn write(job: &WriteJob, qd: u64) -> io::Result<()> {
    let ctl = Control::open()?;
    let next = AtomicU64::new(0);
    // Blocks with a write in flight: (device index, offset).
    let busy: Mutex<Vec<(usize, u64)>> = Mutex::new(Vec::new());
    let freed = Condvar::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..qd.max(1))
            .map(|_| s.spawn(|| writer(job, &ctl, &next, &busy, &freed)))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("writer panicked")))
        })
    })
}

/// One writer thread of [`write`]: takes the next write until none is
/// left.
fn writer(
    job: &WriteJob,
    ctl: &Control,
    next: &AtomicU64,
    busy: &Mutex<Vec<(usize, u64)>>,
    freed: &Condvar,
) -> io::Result<()> {
    let mut buf = AlignedBuf::new(BLOCK);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= job.count {
            return Ok(());
        }
        let id = job.first_id + i;
        let r = mix(job.seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let dev = (r >> 60) as usize % job.devs.len();
        let (kind, f) = &job.devs[dev];
        let offset = (r % job.blocks) * BLOCK as u64;
        {
            let mut b = busy.lock().map_err(|_| io::Error::other("lock poisoned"))?;
            while b.contains(&(dev, offset)) {
                b = freed
                    .wait(b)
                    .map_err(|_| io::Error::other("lock poisoned"))?;
            }
            b.push((dev, offset));
        }
        Tag {
            kind: *kind,
            id,
            offset,
        }
        .fill(&mut buf);
        let done = f
            .write_all_at(&buf, offset)
            .and_then(|()| ctl.message(&job.log, &format!("mark ack-{id}")));
        busy.lock()
            .map_err(|_| io::Error::other("lock poisoned"))?
            .retain(|&x| x != (dev, offset));
        freed.notify_all();
        done?;
    }
}

/// A table line `START LENGTH TYPE PARAMS`.
fn table(line: &str) -> io::Result<(u64, u64, String, String)> {
    let mut f = line.splitn(4, ' ');
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad table line: {line}"),
        )
    };
    let start = f.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let len = f.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let kind = f.next().ok_or_else(bad)?.to_string();
    Ok((start, len, kind, f.next().unwrap_or("").to_string()))
}

/// `dm`: the device-mapper command `args` (`create NAME TABLE`, ...).
///
/// # Errors
///
/// [`usage`] for a bad command, or the device-mapper error.
pub fn dm(args: &[String]) -> io::Result<()> {
    const ENXIO: i32 = 6;
    let ctl = Control::open()?;
    let name = args.get(1).ok_or_else(usage)?;
    let load = |line: Option<&String>| -> io::Result<()> {
        let (start, len, kind, params) = table(line.ok_or_else(usage)?)?;
        let t = [Target {
            start,
            len,
            kind: &kind,
            params: &params,
        }];
        ctl.load(name, &t)
    };
    match args.first().map(String::as_str) {
        Some("create") => {
            let d = ctl.create(name)?;
            if let Err(e) = load(args.get(2)).and_then(|()| ctl.resume(name)) {
                let _ = ctl.remove(name);
                return Err(e);
            }
            println!("{}", d.node().display());
            Ok(())
        }
        Some("reload") => load(args.get(2)),
        Some("suspend") => ctl.suspend(name),
        Some("resume") => ctl.resume(name),
        Some("status") => {
            println!("{}", ctl.status(name)?);
            Ok(())
        }
        Some("remove") => {
            for n in &args[1..] {
                if let Err(e) = ctl.remove(n) {
                    if ctl.last_errno() != ENXIO {
                        return Err(e);
                    }
                }
            }
            Ok(())
        }
        Some("wait-merged") => wait_merged(&ctl, name),
        _ => Err(usage()),
    }
}

/// Polls the snapshot-merge device `name` until its merge is done and
/// prints its status.
fn wait_merged(ctl: &Control, name: &str) -> io::Result<()> {
    for _ in 0..3000 {
        let st = ctl.status(name)?;
        let mut f = st.split_whitespace();
        let allocated = f.next().and_then(|a| a.split('/').next());
        if allocated.is_some() && allocated == f.next() {
            println!("{st}");
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(io::Error::other(format!(
        "merge of {name} not done after 300 s"
    )))
}

/// The chunk size of the dumps: 4 KiB.
const DUMP_CHUNK: ChunkSize = match ChunkSize::new(8, BlockSizes::SECTOR) {
    Ok(c) => c,
    Err(_) => panic!("8 sectors is a chunk size"),
};

/// `permutation-dump`: the dump of `n` exceptions, exception `i` mapping
/// origin chunk `i * mul mod n`, written in the format of snap_dump
/// (tools/README.md) without using the tools' writer.
///
/// # Errors
///
/// [`usage`] for `n` 0, an error for a `per_area` not the format's, or
/// stdout's.
pub fn permutation_dump(n: u64, per_area: u64, mul: u64, cow_sectors: u64) -> io::Result<()> {
    if n == 0 {
        return Err(usage());
    }
    exception_dump(n, per_area, cow_sectors, |i| {
        (u128::from(i) * u128::from(mul) % u128::from(n)) as u64
    })
}

/// `random-dump`: the dump of `n` exceptions of random 50-bit origin
/// chunks.
///
/// # Errors
///
/// An error for a `per_area` not the format's, or stdout's.
pub fn random_dump(n: u64, per_area: u64, cow_sectors: u64) -> io::Result<()> {
    exception_dump(n, per_area, cow_sectors, |i| mix(i) >> 14)
}

/// A dump of `n` exceptions in the store's allocation order, exception `i`
/// mapping origin chunk `old_of(i)`. `per_area`, given on the command line,
/// must be the format's exceptions per area for the dump's chunk size.
fn exception_dump(
    n: u64,
    per_area: u64,
    cow_sectors: u64,
    old_of: impl Fn(u64) -> u64,
) -> io::Result<()> {
    let layout = Layout::new(DUMP_CHUNK);
    let format_per_area = u64::from(layout.exceptions_per_area());
    if per_area != format_per_area {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "PER_AREA {per_area}: areas of {}-sector chunks hold {format_per_area} exceptions",
                DUMP_CHUNK.sectors()
            ),
        ));
    }
    let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
    writeln!(
        out,
        "<snap_store dump_version=\"1\" disk_version=\"{SNAPSHOT_DISK_VERSION}\" valid=\"1\" chunk_size=\"{}\" cow_sectors=\"{cow_sectors}\">",
        DUMP_CHUNK.sectors()
    )?;
    for (i, new) in (0..n).zip(data_chunks(layout)) {
        let old = old_of(i);
        writeln!(
            out,
            "  <exception old_chunk=\"{old}\" new_chunk=\"{new}\"/>"
        )?;
    }
    writeln!(out, "</snap_store>")?;
    out.flush()
}
