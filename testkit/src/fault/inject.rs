// SPDX-License-Identifier: GPL-2.0-only

//! The kernel's fault-injection switches: `fail_make_request` for the I/O
//! of the scratch device, the thread's `fail-nth` for allocations, and the
//! stack-trace filter that limits those to the store's code.

use std::fs;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;

use super::SECTOR;
use crate::blockdev::open_direct;
use crate::blockdev::AlignedBuf;

const FMR: &str = "/sys/kernel/debug/fail_make_request";

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
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

/// Where the count is kept between runs: a file named after the boot.
fn count_file() -> io::Result<PathBuf> {
    let boot = get("/proc/sys/kernel/random/boot_id")?;
    Ok(std::env::temp_dir().join(format!("fault_run-{boot}.count")))
}

/// The fault-injection switches of the kernel.
pub(super) struct Inject {
    /// The bdev's `make-it-fail`.
    make_it_fail: PathBuf,
    /// Calls of `fail_make_request` counted so far (its `interval` counter,
    /// which cannot be read or reset: it is followed here, and kept in
    /// [`count_file`] for the next run in the same boot).
    count: u64,
}

impl Inject {
    /// Sets the switches up for faults on `scratch`, none armed.
    pub(super) fn new(scratch: &Path) -> io::Result<Self> {
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
    pub(super) fn arm_io(&mut self, k: u64) -> io::Result<()> {
        put(format!("{FMR}/interval"), &(self.count + k).to_string())?;
        put(format!("{FMR}/times"), "1")?;
        put(format!("{FMR}/probability"), "100")
    }

    /// Disarms it; returns whether the fault fired. If it did not, bios of
    /// our own to `scratch` are failed until it does, to keep the counter
    /// known.
    pub(super) fn disarm_io(&mut self, k: u64, scratch: &Path) -> io::Result<bool> {
        let fired = get(format!("{FMR}/times"))? == "0";
        if !fired {
            let f = open_direct(scratch, false)?;
            let mut buf = AlignedBuf::new(4096);
            let mut n = 0;
            while f.read_exact_at(&mut buf[..SECTOR as usize], 0).is_ok() {
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
pub(super) struct Nth(File);

impl Nth {
    /// Opens this thread's `fail-nth`.
    pub(super) fn open() -> io::Result<Self> {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/thread-self/fail-nth")
            .map(Self)
            .map_err(|e| other(format!("/proc/thread-self/fail-nth: {e}")))
    }

    /// Fails the `n`-th fault-injection call of the thread from now.
    pub(super) fn arm(&self, n: u64) -> io::Result<()> {
        self.0.write_all_at(n.to_string().as_bytes(), 0)
    }

    /// Disarms it; returns whether it fired.
    pub(super) fn disarm(&self) -> io::Result<bool> {
        let mut buf = [0u8; 32];
        let len = self.0.read_at(&mut buf, 0)?;
        self.0.write_all_at(b"0", 0)?;
        Ok(buf
            .get(..len)
            .map(|b| String::from_utf8_lossy(b).trim() == "0")
            == Some(true))
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
pub(super) fn store_text(store: &str) -> io::Result<(u64, u64)> {
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
/// stack (the stack-trace filter of failslab and fail_page_alloc); `None`
/// lifts the limit.
pub(super) fn filter_allocations(range: Option<(u64, u64)>) -> io::Result<()> {
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
