// SPDX-License-Identifier: GPL-2.0-only

//! The fault test of the persistent store: every I/O of the COW device, and
//! every allocation of a table load, is failed in turn while a snapshot does
//! one thing, and each outcome is checked.
//!
//! ```text
//! fault_run SCENARIO c|ours ORIGIN SCRATCH [SEED]
//! ```
//!
//! ORIGIN and SCRATCH are two whole block devices (brd ram disks): the
//! origin, and the device a dm-linear slice of which is the COW device.
//! The scenarios:
//!
//! - `io-new`: a new store's table load (zeroing area 0, writing the header);
//! - `io-commit`: origin writes, each committing one exception;
//! - `io-next-area`: the same across the end of area 0 (the commit that
//!   fills an area, the zeroing of the next);
//! - `io-merge`: a merge of snapshot writes back into the origin;
//! - `io-drop`: a P snapshot overflowing (the invalid header of
//!   `drop_snapshot`);
//! - `alloc-new`, `alloc-load`: the table load of a new store, and of a store
//!   of two areas of exceptions, with allocations failed.
//!
//! I/O faults go through `fail_make_request` on SCRATCH: the k-th bio to it
//! after the fault is armed fails, for k = 1, 2, ... until the scenario
//! completes without reaching the k-th bio. Allocation faults go through the
//! task's `fail-nth` (failslab and fail_page_alloc, sleeping allocations
//! included): the n-th allocation of the table load made with the store's
//! code on the stack fails (`c`: the functions of dm-snap-persistent.c in
//! dm-snapshot, `ours`: our module; dm-snapshot's own allocations, its
//! mempools, are left alone).
//!
//! After each run the devices are torn down, the COW device is loaded again
//! with no fault, and the run fails if:
//! - the origin does not hold exactly what was written to it;
//! - the COW device no longer loads, or loads Invalid though the snapshot
//!   was never invalidated;
//! - the snapshot loads valid and shows anything but its old data (a merge:
//!   the origin, once merged, is not the snapshot's data);
//! - `snap_check` finds a problem in the COW device;
//! - a refused table load changed the COW device of an existing store.
//!
//! One outcome is counted apart: a snapshot that was invalidated, but whose
//! invalid header did not reach the disk because that very write failed,
//! loads again as valid and shows origin writes made after the
//! invalidation. Neither store can prevent that (`drop_snapshot` cannot
//! report an error; dm-snapshot releases the origin writes after it), so it
//! is reported as `invalidation lost` for each store, and not failed.
//!
//! Ends with `fault SCENARIO: P points, F failed, L invalidations lost`, and
//! exits 1 if a run failed.

#![forbid(unsafe_code)]

use std::fs;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread::sleep;
use std::time::Duration;
use std::time::Instant;

use snap_crash::blockdev::open_direct;
use snap_crash::blockdev::read_all;
use snap_crash::blockdev::size;
use snap_crash::blockdev::write_all;
use snap_crash::blockdev::AlignedBuf;
use snap_crash::dm::Control;
use snap_crash::dm::Target;
use snap_crash::tag::Rng;
use snap_tools::check::check;
use snap_tools::check::CheckOptions;
use snap_tools::check::Kind;
use snap_tools::io::MemIo;
use snap_tools::progress::Progress;

/// Chunk size of every scenario, in sectors: 512-byte chunks make areas of
/// 32 exceptions, so a few dozen writes cross an area.
const CHUNK: u64 = 1;
const CHUNK_BYTES: usize = 512;
/// Exceptions per metadata area at [`CHUNK`].
const PER_AREA: u64 = CHUNK_BYTES as u64 / 16;
/// Bytes of the origin used.
const ORIGIN_BYTES: usize = 64 * 1024;
/// Most runs of one scenario (a bound on a runaway sweep).
const MAX_POINTS: u64 = 4000;

const FMR: &str = "/sys/kernel/debug/fail_make_request";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!(
            "usage: fault_run io-new|io-commit|io-next-area|io-merge|io-drop|alloc-new|alloc-load \
             c|ours ORIGIN SCRATCH [SEED]"
        );
        return ExitCode::from(2);
    }
    let seed = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(1);
    match run(
        &args[1],
        &args[2],
        Path::new(&args[3]),
        Path::new(&args[4]),
        seed,
    ) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fault_run: {e}");
            ExitCode::from(2)
        }
    }
}

fn tgt<'a>(len: u64, kind: &'a str, params: &'a str) -> Target<'a> {
    Target {
        start: 0,
        len,
        kind,
        params,
    }
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// `len` bytes of a pattern named by `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// The fault-injection switches of the kernel.
struct Inject {
    /// The bdev's `make-it-fail`.
    make_it_fail: PathBuf,
    /// Calls of `fail_make_request` counted so far (its `interval` counter,
    /// which cannot be read or reset: it is followed here, and kept in
    /// [`Inject::state`] for the next run in the same boot).
    count: u64,
}

/// Where the count is kept between runs: a file named after the boot.
fn count_file() -> io::Result<PathBuf> {
    let boot = get("/proc/sys/kernel/random/boot_id")?;
    Ok(std::env::temp_dir().join(format!("fault_run-{boot}.count")))
}

fn put(path: impl AsRef<Path>, value: &str) -> io::Result<()> {
    let path = path.as_ref();
    fs::write(path, value).map_err(|e| other(format!("{}: {e}", path.display())))
}

fn get(path: impl AsRef<Path>) -> io::Result<String> {
    let path = path.as_ref();
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| other(format!("{}: {e}", path.display())))
}

impl Inject {
    fn new(scratch: &Path) -> io::Result<Self> {
        let dev = scratch
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| other(format!("{}: not a device node", scratch.display())))?;
        let make_it_fail = PathBuf::from(format!("/sys/block/{dev}/make-it-fail"));
        put(format!("{FMR}/probability"), "0")?;
        for (file, v) in [("verbose", "0"), ("space", "0"), ("task-filter", "N")] {
            put(format!("{FMR}/{file}"), v)?;
        }
        put("/sys/kernel/debug/failslab/ignore-gfp-wait", "N")?;
        put("/sys/kernel/debug/failslab/verbose", "0")?;
        // Page allocations too (vmalloc'd tables, large buffers), where the
        // kernel has fail_page_alloc.
        let fpa = Path::new("/sys/kernel/debug/fail_page_alloc");
        if fpa.exists() {
            put(fpa.join("ignore-gfp-wait"), "N")?;
            put(fpa.join("ignore-gfp-highmem"), "N")?;
            put(fpa.join("min-order"), "0")?;
            put(fpa.join("verbose"), "0")?;
        }
        put(&make_it_fail, "1")?;
        let count = match fs::read_to_string(count_file()?) {
            Ok(s) => s
                .trim()
                .parse()
                .map_err(|_| other(format!("bad count file {s:?}")))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Self {
            make_it_fail,
            count,
        })
    }

    fn save(&self) -> io::Result<()> {
        fs::write(count_file()?, self.count.to_string())
    }

    /// Arms `fail_make_request` so that the `k`-th bio from now fails:
    /// its counter fails the calls that reach a multiple of `interval`,
    /// and the first multiple of `count + k` after `count` is `count + k`.
    fn arm_io(&mut self, k: u64) -> io::Result<()> {
        put(format!("{FMR}/interval"), &(self.count + k).to_string())?;
        put(format!("{FMR}/times"), "1")?;
        put(format!("{FMR}/probability"), "100")
    }

    /// Disarms it; returns whether the fault fired. If it did not, bios of
    /// our own are failed until it does, to keep the counter known.
    fn disarm_io(&mut self, k: u64, scratch: &Path) -> io::Result<bool> {
        let fired = get(format!("{FMR}/times"))? == "0";
        if !fired {
            let f = open_direct(scratch, false)?;
            let mut buf = AlignedBuf::new(4096);
            let mut n = 0;
            while f.read_exact_at(&mut buf[..512], 0).is_ok() {
                n += 1;
                if n > k {
                    return Err(other("fail_make_request did not fire".into()));
                }
            }
        }
        put(format!("{FMR}/probability"), "0")?;
        // An interval of 1 fails the first call without counting it.
        if self.count + k > 1 {
            self.count += k;
        }
        self.save()?;
        Ok(fired)
    }
}

impl Drop for Inject {
    fn drop(&mut self) {
        let _ = put(format!("{FMR}/probability"), "0");
        let _ = put(&self.make_it_fail, "0");
    }
}

/// The `fail-nth` file of this thread: the `n`-th fault-injection call of
/// the thread fails. It is opened once: opening it (and any other syscall
/// that allocates) while armed would count.
struct Nth(File);

impl Nth {
    fn open() -> io::Result<Self> {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/thread-self/fail-nth")
            .map(Self)
            .map_err(|e| other(format!("/proc/thread-self/fail-nth: {e}")))
    }

    fn arm(&self, n: u64) -> io::Result<()> {
        self.0.write_all_at(n.to_string().as_bytes(), 0)
    }

    /// Disarms it; returns whether it fired.
    fn disarm(&self) -> io::Result<bool> {
        let mut buf = [0u8; 32];
        let len = self.0.read_at(&mut buf, 0)?;
        self.0.write_all_at(b"0", 0)?;
        Ok(buf
            .get(..len)
            .map(|b| String::from_utf8_lossy(b).trim() == "0")
            == Some(true))
    }
}

/// Removes device `name` if it exists.
fn remove(ctl: &Control, name: &str) -> io::Result<()> {
    match ctl.remove(name) {
        Err(_) if ctl.last_errno() == libc::ENXIO => Ok(()),
        r => r,
    }
}

/// The functions of the C store in `dm_snapshot` (dm-snap-persistent.c): the
/// object is linked last in the module, so its code runs from the first of
/// them to the end of the module's text.
const C_STORE_FUNCTIONS: [&str; 8] = [
    "alloc_area",
    "free_area",
    "do_metadata",
    "chunk_io",
    "read_header",
    "read_exceptions",
    "persistent_ctr",
    "persistent_read_metadata",
];

/// The text addresses of a store, from `/proc/kallsyms`: `ours` is the
/// whole of `dm_snap_persistent`, `c` the C store's part of `dm_snapshot`.
fn store_text(store: &str) -> io::Result<(u64, u64)> {
    let module = match store {
        "ours" => "[dm_snap_persistent]",
        "c" => "[dm_snapshot]",
        _ => return Err(other(format!("no store {store}: c or ours"))),
    };
    let text = fs::read_to_string("/proc/kallsyms")?;
    let mut all = Vec::new();
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        if !matches!(kind, "t" | "T") || addr == 0 {
            continue;
        }
        all.push(addr);
        if w.next() != Some(module) {
            continue;
        }
        hi = hi.max(addr);
        if store == "ours" || C_STORE_FUNCTIONS.contains(&name) {
            lo = lo.min(addr);
        }
    }
    if lo > hi {
        return Err(other(format!(
            "no text symbols of {module} in /proc/kallsyms (not loaded, or addresses hidden)"
        )));
    }
    // The end: the next function in the address space, within 64 KiB.
    let end = all
        .iter()
        .copied()
        .filter(|&a| a > hi)
        .min()
        .unwrap_or(u64::MAX)
        .min(hi.saturating_add(64 * 1024));
    Ok((lo, end))
}

/// Limits the allocation faults to calls made with the store's code on the
/// stack (the stack-trace filter of failslab and fail_page_alloc).
fn filter_allocations(range: Option<(u64, u64)>) -> io::Result<()> {
    for dir in ["failslab", "fail_page_alloc"] {
        let d = Path::new("/sys/kernel/debug").join(dir);
        let (lo, hi) = range.unwrap_or((0, u64::MAX));
        if !d.join("require-start").exists() {
            if range.is_some() {
                return Err(other(format!(
                    "{}: no stack-trace filter (FAULT_INJECTION_STACKTRACE_FILTER)",
                    d.display()
                )));
            }
            continue;
        }
        put(d.join("stacktrace-depth"), "32")?;
        put(d.join("require-start"), &lo.to_string())?;
        put(d.join("require-end"), &hi.to_string())?;
    }
    Ok(())
}

/// The devices: the origin, and the COW slice of the scratch device.
struct Env {
    ctl: Control,
    origin: PathBuf,
    scratch: PathBuf,
    cow_node: PathBuf,
    cow_len: u64,
    /// The snapshot device after a refused table load: it never had a
    /// table, so the next load goes to it instead of a new device (the
    /// allocation scenarios refuse most loads; a device creation and
    /// removal per point is most of a point's time under TCG).
    kept: std::cell::Cell<Option<snap_crash::dm::Device>>,
}

/// One scenario's starting point: what the devices hold, and what the
/// snapshot shows.
struct Saved {
    origin: Vec<u8>,
    cow: Vec<u8>,
    view: Vec<u8>,
}

const COW: &str = "fault-cow";
const SNAP: &str = "fault-snap";
const ORIGIN: &str = "fault-origin";

impl Env {
    fn new(origin: &Path, scratch: &Path, cow_len: u64) -> io::Result<Self> {
        let ctl = Control::open()?;
        for n in [SNAP, ORIGIN, COW] {
            remove(&ctl, n)?;
        }
        let s = scratch.display().to_string();
        let params = format!("{s} 0");
        let dev = ctl.create(COW)?;
        ctl.load(COW, &[tgt(cow_len / 512, "linear", &params)])?;
        ctl.resume(COW)?;
        Ok(Self {
            ctl,
            origin: origin.to_path_buf(),
            scratch: scratch.to_path_buf(),
            cow_node: dev.node(),
            cow_len,
            kept: std::cell::Cell::new(None),
        })
    }

    fn origin_sectors(&self) -> u64 {
        ORIGIN_BYTES as u64 / 512
    }

    /// Device `name` with no table: the kept snapshot device, or a new one.
    fn device(&self, name: &str) -> io::Result<snap_crash::dm::Device> {
        if name == SNAP {
            if let Some(d) = self.kept.take() {
                return Ok(d);
            }
        }
        self.ctl.create(name)
    }

    /// Keeps the snapshot device `d`, whose table load was refused, for the
    /// next load.
    fn keep(&self, d: snap_crash::dm::Device) {
        self.kept.set(Some(d));
    }

    /// Creates device `name` with one target of `kind`.
    fn table(&self, name: &str, kind: &str, params: &str) -> io::Result<PathBuf> {
        let dev = self.device(name)?;
        match self
            .ctl
            .load(name, &[tgt(self.origin_sectors(), kind, params)])
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

    fn snapshot_params(&self) -> String {
        format!(
            "{} {} P {CHUNK}",
            self.origin.display(),
            self.cow_node.display()
        )
    }

    fn snapshot(&self) -> io::Result<PathBuf> {
        self.table(SNAP, "snapshot", &self.snapshot_params())
    }

    fn origin_dev(&self) -> io::Result<PathBuf> {
        self.table(
            ORIGIN,
            "snapshot-origin",
            &self.origin.display().to_string(),
        )
    }

    fn merge(&self) -> io::Result<PathBuf> {
        self.table(SNAP, "snapshot-merge", &self.snapshot_params())
    }

    fn status(&self, name: &str) -> String {
        self.ctl
            .status(name)
            .unwrap_or_else(|e| format!("(status failed: {e})"))
    }

    /// Removes the snapshot (unless kept: it has no table) and origin devices.
    fn teardown(&self) -> io::Result<()> {
        let kept = self.kept.take();
        if kept.is_none() {
            remove(&self.ctl, SNAP)?;
        }
        self.kept.set(kept);
        remove(&self.ctl, ORIGIN)
    }

    /// Removes every device of the scenario but the COW device.
    fn teardown_all(&self) -> io::Result<()> {
        self.kept.set(None);
        remove(&self.ctl, SNAP)?;
        remove(&self.ctl, ORIGIN)
    }

    fn restore(&self, s: &Saved) -> io::Result<()> {
        write_all(&open_direct(&self.origin, true)?, 0, &s.origin)?;
        write_all(&open_direct(&self.scratch, true)?, 0, &s.cow)
    }

    fn read_origin(&self) -> io::Result<Vec<u8>> {
        read_all(&open_direct(&self.origin, false)?, 0, ORIGIN_BYTES)
    }

    fn read_cow(&self) -> io::Result<Vec<u8>> {
        read_all(
            &open_direct(&self.scratch, false)?,
            0,
            self.cow_len as usize,
        )
    }

    /// Polls a merging snapshot until its merge is done or has failed;
    /// returns its last status.
    fn wait_merged(&self) -> String {
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
fn write_chunk(dev: &File, chunk: u64, data: &[u8]) -> io::Result<()> {
    let mut buf = AlignedBuf::new(CHUNK_BYTES);
    buf.copy_from_slice(data);
    dev.write_all_at(&buf, chunk * CHUNK_BYTES as u64)
}

/// The chunk of the `i`-th write of a scenario: spread over the origin.
fn chunk_of(i: u64) -> u64 {
    (i * 37 + 5) % (ORIGIN_BYTES / CHUNK_BYTES) as u64
}

fn put_chunk(img: &mut [u8], chunk: u64, data: &[u8]) {
    let at = chunk as usize * CHUNK_BYTES;
    img[at..at + CHUNK_BYTES].copy_from_slice(data);
}

/// What one run of a scenario did.
#[derive(Default)]
struct Run {
    /// Whether the snapshot was seen invalid (or the merge failed).
    invalidated: bool,
    /// The origin as it must be now (None: checked after the merge).
    origin: Option<Vec<u8>>,
    /// The run went wrong in itself (an origin write failed).
    broken: bool,
    /// The table load was refused (with this errno).
    refused: Option<i32>,
    /// A line for the log.
    what: String,
}

struct Tally {
    points: u64,
    failed: u64,
    lost_invalidation: u64,
}

/// The scenario's starting point: a new store over a zeroed COW device
/// with `origin_writes` exceptions of origin writes and `snap_writes` of
/// snapshot writes.
fn prepare(env: &Env, seed: u64, origin_writes: u64, snap_writes: u64) -> io::Result<Saved> {
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
        return Err(other(format!("preparing the scenario: snapshot {st}")));
    }
    s.origin = env.read_origin()?;
    s.cow = env.read_cow()?;
    Ok(s)
}

/// Origin writes through a snapshot-origin device while a snapshot is
/// active; `fault` runs between the devices' creation and the writes.
fn origin_writes(
    env: &Env,
    s: &Saved,
    seed: u64,
    first: u64,
    count: u64,
    arm: &mut dyn FnMut() -> io::Result<()>,
) -> io::Result<Run> {
    let mut r = Run {
        origin: Some(s.origin.clone()),
        ..Run::default()
    };
    env.snapshot()?;
    let o = env.origin_dev()?;
    let of = open_direct(&o, true)?;
    arm()?;
    for i in first..first + count {
        let data = pattern(seed + 1000 + i, CHUNK_BYTES);
        let c = chunk_of(i);
        match write_chunk(&of, c, &data) {
            Ok(()) => {
                if let Some(o) = r.origin.as_mut() {
                    put_chunk(o, c, &data);
                }
            }
            Err(e) => {
                // Through a snapshot-origin an origin write never fails for
                // the snapshot's sake: a failed write here is a failure.
                r.what = format!("origin write {i} failed: {e}");
                r.broken = true;
                break;
            }
        }
    }
    drop(of);
    let st = env.status(SNAP);
    r.invalidated = st.contains("Invalid");
    r.what = st;
    Ok(r)
}

fn main_loop(
    env: &Env,
    name: &str,
    mut one: impl FnMut(u64) -> io::Result<(bool, Run)>,
    s: &Saved,
    merge: bool,
) -> io::Result<Tally> {
    let mut t = Tally {
        points: 0,
        failed: 0,
        lost_invalidation: 0,
    };
    // The starting point itself, loaded without a fault, must pass: points
    // that leave both devices as they were then load the same way (see
    // `verify`).
    env.restore(s)?;
    let start = Run {
        origin: Some(s.origin.clone()),
        ..Run::default()
    };
    match verify(env, s, &start, merge, false)? {
        Verdict::Good(what) => println!("{name} starting point: {what}"),
        Verdict::InvalidationLost(what) | Verdict::Bad(what) => {
            return Err(other(format!(
                "{name}: the starting point does not load: {what}"
            )));
        }
    }
    env.teardown()?;
    for k in 1..=MAX_POINTS {
        let (fired, run) = one(k)?;
        env.teardown()?;
        if !fired {
            println!(
                "{name}: {} points, the scenario ends before point {k}",
                k - 1
            );
            return Ok(t);
        }
        t.points += 1;
        match verify(env, s, &run, merge, true) {
            Ok(Verdict::Good(what)) => println!("{name} point {k}: {}; {what}", run.what),
            Ok(Verdict::InvalidationLost(what)) => {
                t.lost_invalidation += 1;
                println!("{name} point {k}: invalidation lost: {}; {what}", run.what);
            }
            Ok(Verdict::Bad(what)) => {
                t.failed += 1;
                println!("FAILED {name} point {k}: {}; {what}", run.what);
            }
            Err(e) => {
                t.failed += 1;
                println!("FAILED {name} point {k}: {}; checking: {e}", run.what);
            }
        }
        env.teardown()?;
    }
    Err(other(format!("{name}: more than {MAX_POINTS} points")))
}

/// Marks the run broken if the live snapshot `node` does not show `s.view`.
fn check_view(node: &Path, s: &Saved, run: &mut Run) -> io::Result<()> {
    let view = read_all(&open_direct(node, false)?, 0, ORIGIN_BYTES)?;
    if !run.what.contains("Invalid") && view != s.view {
        run.broken = true;
        run.what += "; the loaded snapshot does not show its data";
    }
    Ok(())
}

enum Verdict {
    Good(String),
    InvalidationLost(String),
    Bad(String),
}

/// Loads the COW device again with no fault and checks it against what the
/// run did.
/// With `shortcut`, a run that left the origin and the COW device exactly
/// as the starting point is not loaded again: main_loop has checked that
/// load once, and the store keeps nothing from one load to the next.
fn verify(env: &Env, s: &Saved, run: &Run, merge: bool, shortcut: bool) -> io::Result<Verdict> {
    if run.broken {
        return Ok(Verdict::Bad("the run went wrong".into()));
    }
    if let Some(o) = &run.origin {
        if &env.read_origin()? != o {
            return Ok(Verdict::Bad(
                "the origin does not hold what was written to it".into(),
            ));
        }
    }
    let cow = env.read_cow()?;
    if run.refused.is_some() && s.cow.iter().any(|&b| b != 0) && cow != s.cow {
        return Ok(Verdict::Bad(
            "a refused table load changed the COW device".into(),
        ));
    }
    if shortcut && !merge && cow == s.cow && run.origin.as_ref() == Some(&s.origin) {
        return Ok(Verdict::Good("devices unchanged".into()));
    }
    let mut problems = Vec::new();
    check(
        &MemIo::new(cow),
        &CheckOptions::default(),
        &mut Progress::silent(),
        |p| {
            if !matches!(p.kind, Kind::SnapshotInvalid | Kind::NoStore) {
                problems.push(p.to_string());
            }
        },
    )?;
    if !problems.is_empty() {
        return Ok(Verdict::Bad(format!("snap_check: {}", problems.join("; "))));
    }
    let node = match if merge { env.merge() } else { env.snapshot() } {
        Ok(n) => n,
        Err(e) => return Ok(Verdict::Bad(format!("the COW device no longer loads: {e}"))),
    };
    let st = if merge {
        env.wait_merged()
    } else {
        env.status(SNAP)
    };
    if merge && (st.contains("Invalid") || st.contains("Merge failed")) {
        return Ok(Verdict::Bad(format!(
            "the merge fails again with no fault: {st}"
        )));
    }
    if st.contains("Invalid") {
        return Ok(if run.invalidated {
            Verdict::Good(format!("reloads {st}"))
        } else {
            Verdict::Bad(format!("reloads {st}, but was never invalidated"))
        });
    }
    let (view, want) = if merge {
        env.teardown()?;
        (env.read_origin()?, &s.view)
    } else {
        (
            read_all(&open_direct(&node, false)?, 0, ORIGIN_BYTES)?,
            &s.view,
        )
    };
    let differ = view
        .chunks(CHUNK_BYTES)
        .zip(want.chunks(CHUNK_BYTES))
        .filter(|(a, b)| a != b)
        .count();
    Ok(if differ == 0 {
        Verdict::Good(format!("reloads {st}, data intact"))
    } else if run.invalidated && !merge {
        Verdict::InvalidationLost(format!("reloads {st}, {differ} chunks differ"))
    } else {
        Verdict::Bad(format!(
            "reloads {st}, {differ} chunks of the snapshot lost"
        ))
    })
}

fn run(scenario: &str, store: &str, origin: &Path, scratch: &Path, seed: u64) -> io::Result<bool> {
    let ssize = size(&open_direct(scratch, false)?)?;
    let osize = size(&open_direct(origin, false)?)?;
    if osize < ORIGIN_BYTES as u64 {
        return Err(other(format!(
            "{}: smaller than {ORIGIN_BYTES} bytes",
            origin.display()
        )));
    }
    // io-drop: room for area 0 and 3 chunks; the others: two areas and more.
    let cow_len = if scenario == "io-drop" {
        5 * CHUNK_BYTES as u64
    } else {
        64 * 1024
    };
    if ssize < cow_len {
        return Err(other(format!(
            "{}: smaller than {cow_len} bytes",
            scratch.display()
        )));
    }
    let env = Env::new(origin, scratch, cow_len)?;
    let mut inj = Inject::new(scratch)?;
    let start = Instant::now();
    let t = match scenario {
        "io-new" => {
            let s = prepare(&env, seed, 0, 0)?;
            let zero = Saved {
                origin: s.origin.clone(),
                cow: vec![0; cow_len as usize],
                view: s.view.clone(),
            };
            main_loop(
                &env,
                scenario,
                |k| {
                    env.restore(&zero)?;
                    inj.arm_io(k)?;
                    let r = env.snapshot();
                    let mut run = Run {
                        origin: Some(zero.origin.clone()),
                        ..Run::default()
                    };
                    match r {
                        Ok(node) => {
                            run.what = format!("loads: {}", env.status(SNAP));
                            check_view(&node, &zero, &mut run)?;
                        }
                        Err(e) => {
                            run.refused = Some(e.raw_os_error().unwrap_or(0));
                            run.what = format!("refused: {e}");
                        }
                    }
                    let fired = inj.disarm_io(k, scratch)?;
                    Ok((fired, run))
                },
                &zero,
                false,
            )?
        }
        "io-commit" | "io-next-area" | "io-drop" => {
            let (before, writes) = match scenario {
                "io-commit" => (2, 4),
                "io-next-area" => (PER_AREA - 2, 4),
                _ => (1, 4),
            };
            let s = prepare(&env, seed, before, 0)?;
            main_loop(
                &env,
                scenario,
                |k| {
                    env.restore(&s)?;
                    let mut armed = false;
                    let run = origin_writes(&env, &s, seed, before, writes, &mut || {
                        armed = true;
                        inj.arm_io(k)
                    });
                    let fired = if armed {
                        inj.disarm_io(k, scratch)?
                    } else {
                        false
                    };
                    let run = run?;
                    if !armed {
                        return Err(other("the fault was never armed".into()));
                    }
                    Ok((fired, run))
                },
                &s,
                false,
            )?
        }
        "io-merge" => {
            let s = prepare(&env, seed, 2, 6)?;
            main_loop(
                &env,
                scenario,
                |k| {
                    env.restore(&s)?;
                    env.ctl.create(SNAP)?;
                    env.ctl.load(
                        SNAP,
                        &[tgt(
                            env.origin_sectors(),
                            "snapshot-merge",
                            &env.snapshot_params(),
                        )],
                    )?;
                    inj.arm_io(k)?;
                    let resumed = env.ctl.resume(SNAP);
                    let st = env.wait_merged();
                    let fired = inj.disarm_io(k, scratch)?;
                    resumed?;
                    let run = Run {
                        invalidated: st.contains("Invalid"),
                        what: st,
                        ..Run::default()
                    };
                    Ok((fired, run))
                },
                &s,
                true,
            )?
        }
        "alloc-new" | "alloc-load" => {
            let s = if scenario == "alloc-new" {
                let s = prepare(&env, seed, 0, 0)?;
                Saved {
                    cow: vec![0; cow_len as usize],
                    ..s
                }
            } else {
                prepare(&env, seed, PER_AREA + 6, 0)?
            };
            let range = store_text(store)?;
            println!(
                "{scenario}: allocations with {store}'s code at {:#x}..{:#x} on the stack",
                range.0, range.1
            );
            filter_allocations(Some(range))?;
            let nth = Nth::open()?;
            main_loop(
                &env,
                scenario,
                |n| {
                    env.restore(&s)?;
                    let dev = env.device(SNAP)?;
                    let params = env.snapshot_params();
                    let target = [tgt(env.origin_sectors(), "snapshot", &params)];
                    nth.arm(n)?;
                    let r = env.ctl.load(SNAP, &target);
                    let fired = nth.disarm()?;
                    let mut run = Run {
                        origin: Some(s.origin.clone()),
                        ..Run::default()
                    };
                    match r {
                        Ok(()) => {
                            env.ctl.resume(SNAP)?;
                            run.what = format!("loads: {}", env.status(SNAP));
                            // A load that survived the fault must show all
                            // of the snapshot (a lost exception shows the
                            // origin's new data).
                            check_view(&dev.node(), &s, &mut run)?;
                        }
                        Err(e) => {
                            run.refused = Some(env.ctl.last_errno());
                            run.what = format!("refused: {e}");
                            env.keep(dev);
                        }
                    }
                    Ok((fired, run))
                },
                &s,
                false,
            )?
        }
        _ => return Err(other(format!("no scenario {scenario}"))),
    };
    drop(inj);
    filter_allocations(None)?;
    let _ = env.teardown_all();
    let _ = remove(&env.ctl, COW);
    println!(
        "fault {scenario}: {} points, {} failed, {} invalidations lost ({} s)",
        t.points,
        t.failed,
        t.lost_invalidation,
        start.elapsed().as_secs()
    );
    Ok(t.failed == 0 && t.points > 0)
}
