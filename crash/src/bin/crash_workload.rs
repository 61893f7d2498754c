// SPDX-License-Identifier: GPL-2.0-only

//! The writes of the crash-replay test, generated in bulk (a shell loop is
//! far too slow under an emulated CPU).
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
//!     coprime) to the i-th data chunk of the COW device,
//!     2 + (i / PER_AREA) * (PER_AREA + 1) + i % PER_AREA
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
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Condvar;
use std::sync::Mutex;

use snap_crash::blockdev::open_direct;
use snap_crash::blockdev::size;
use snap_crash::blockdev::AlignedBuf;
use snap_crash::dm::Control;
use snap_crash::dm::Target;
use snap_crash::tag::Kind;
use snap_crash::tag::Tag;
use snap_crash::tag::BLOCK;

fn usage() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "usage: crash_workload fill DEV [BYTES] | garbage COW CHUNK_SECTORS RECORDS | \
         write LOGDEV ORIGIN|- SNAPSHOT|- COUNT QD SEED FIRST_ID RANGE | mark LOGDEV TEXT | \
         permutation-dump N PER_AREA MUL COW_SECTORS | random-dump N PER_AREA COW_SECTORS | \
         dm create|reload NAME TABLE | dm suspend|resume|status|wait-merged NAME | dm remove NAME...",
    )
}

fn num(s: Option<&String>) -> io::Result<u64> {
    s.and_then(|s| s.parse().ok()).ok_or_else(usage)
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn fill(dev: &Path, bytes: Option<u64>) -> io::Result<()> {
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

fn garbage(cow: &Path, chunk_sectors: u64, records: u64) -> io::Result<()> {
    let f = open_direct(cow, true)?;
    let chunk = chunk_sectors * 512;
    let cow_chunks = size(&f)? / chunk;
    // Zero header chunk.
    let zero = AlignedBuf::new(chunk as usize);
    f.write_all_at(&zero, 0)?;
    // Area 0 (chunk 1): records old = i, new = 2 + i, then the end marker.
    let mut area = AlignedBuf::new(chunk as usize);
    let per_area = chunk / 16;
    let n = records.min(per_area - 1).min(cow_chunks.saturating_sub(3));
    for i in 0..n {
        let at = (i * 16) as usize;
        area[at..at + 8].copy_from_slice(&i.to_le_bytes());
        area[at + 8..at + 16].copy_from_slice(&(2 + i).to_le_bytes());
    }
    f.write_all_at(&area, chunk)?;
    // Garbage in the chunks they point at.
    let mut data = AlignedBuf::new(chunk as usize);
    for i in 0..n {
        let off = (2 + i) * chunk;
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

struct WriteJob {
    log: String,
    devs: Vec<(Kind, File)>,
    count: u64,
    seed: u64,
    first_id: u64,
    blocks: u64,
}

fn write(job: &WriteJob, qd: u64) -> io::Result<()> {
    let ctl = Control::open()?;
    let next = AtomicU64::new(0);
    // Blocks with a write in flight: (device index, offset).
    let busy: Mutex<Vec<(usize, u64)>> = Mutex::new(Vec::new());
    let freed = Condvar::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..qd.max(1))
            .map(|_| {
                s.spawn(|| -> io::Result<()> {
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
                            let mut b =
                                busy.lock().map_err(|_| io::Error::other("lock poisoned"))?;
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
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("writer panicked")))
        })
    })
}

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

fn dm(args: &[String]) -> io::Result<()> {
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
        Some("wait-merged") => {
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
        _ => Err(usage()),
    }
}

/// The dump of `permutation-dump`, written in the format of snap_dump
/// (tools/README.md) without using the tools' writer.
fn permutation_dump(n: u64, per_area: u64, mul: u64, cow_sectors: u64) -> io::Result<()> {
    if n == 0 {
        return Err(usage());
    }
    exception_dump(n, per_area, cow_sectors, |i| {
        (u128::from(i) * u128::from(mul) % u128::from(n)) as u64
    })
}

/// A dump of `n` exceptions in the store's allocation order, exception `i`
/// mapping origin chunk `old_of(i)`.
fn exception_dump(
    n: u64,
    per_area: u64,
    cow_sectors: u64,
    old_of: impl Fn(u64) -> u64,
) -> io::Result<()> {
    use std::io::Write;
    if per_area == 0 {
        return Err(usage());
    }
    let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
    writeln!(
        out,
        "<snap_store dump_version=\"1\" disk_version=\"1\" valid=\"1\" chunk_size=\"8\" cow_sectors=\"{cow_sectors}\">"
    )?;
    for i in 0..n {
        let old = old_of(i);
        let new = 2 + i / per_area * (per_area + 1) + i % per_area;
        writeln!(
            out,
            "  <exception old_chunk=\"{old}\" new_chunk=\"{new}\"/>"
        )?;
    }
    writeln!(out, "</snap_store>")?;
    out.flush()
}

fn run(args: &[String]) -> io::Result<()> {
    match args.first().map(String::as_str) {
        Some("dm") => dm(&args[1..]),
        Some("fill") => fill(
            Path::new(args.get(1).ok_or_else(usage)?),
            args.get(2).map(|s| num(Some(s))).transpose()?,
        ),
        Some("garbage") => garbage(
            Path::new(args.get(1).ok_or_else(usage)?),
            num(args.get(2))?,
            num(args.get(3))?,
        ),
        Some("mark") => Control::open()?.message(
            args.get(1).ok_or_else(usage)?,
            &format!("mark {}", args.get(2).ok_or_else(usage)?),
        ),
        Some("permutation-dump") => permutation_dump(
            num(args.get(1))?,
            num(args.get(2))?,
            num(args.get(3))?,
            num(args.get(4))?,
        ),
        Some("random-dump") => exception_dump(
            num(args.get(1))?,
            num(args.get(2))?,
            num(args.get(3))?,
            |i| mix(i) >> 14,
        ),
        Some("write") => {
            let mut devs = Vec::new();
            for (k, a) in [(Kind::Origin, args.get(2)), (Kind::Snapshot, args.get(3))] {
                match a.map(String::as_str) {
                    None => return Err(usage()),
                    Some("-") => {}
                    Some(p) => devs.push((k, open_direct(Path::new(p), true)?)),
                }
            }
            if devs.is_empty() {
                return Err(usage());
            }
            let job = WriteJob {
                log: args.get(1).ok_or_else(usage)?.clone(),
                devs,
                count: num(args.get(4))?,
                seed: num(args.get(6))?,
                first_id: num(args.get(7))?,
                blocks: (num(args.get(8))? / BLOCK as u64).max(1),
            };
            write(&job, num(args.get(5))?)
        }
        _ => Err(usage()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash_workload: {e}");
            ExitCode::from(2)
        }
    }
}
