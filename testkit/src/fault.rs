// SPDX-License-Identifier: GPL-2.0-only

//! The fault test of the persistent store, behind `fault_run`: every I/O of
//! the COW device, and every allocation of a table load, is failed in turn
//! while a snapshot does one thing, and each outcome is checked.
//!
//! ```text
//! fault_run SCENARIO c|ours ORIGIN SCRATCH [SEED]
//! ```
//!
//! ORIGIN and SCRATCH are two whole block devices (brd ram disks): the
//! origin, and the device a dm-linear slice of which is the COW device.
//! The scenarios ([`Scenario`]):
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
//! Ends with `fault SCENARIO: P points, F failed, L invalidations lost`;
//! [`run`] returns false if a run failed.
//!
//! - `inject`: the kernel's fault-injection switches;
//! - `env`: the devices of a scenario and its starting point;
//! - `verify`: the sweep over the fault points and the check of each.

#![forbid(unsafe_code)]

mod env;
mod inject;
mod verify;

use std::io;
use std::path::Path;
use std::time::Instant;

use snap_format::ChunkSize;
use snap_format::Layout;
use snap_format::INITIAL_NEXT_FREE;
use snap_format::SECTOR_SIZE;

use crate::blockdev::open_direct;
use crate::blockdev::size;
use env::prepare;
use env::remove;
use env::tgt;
use env::Env;
use env::Saved;
use env::COW;
use env::SNAP;
use inject::filter_allocations;
use inject::store_text;
use inject::Inject;
use inject::Nth;
use verify::check_view;
use verify::origin_writes;
use verify::sweep;
use verify::Run;
use verify::Tally;

/// The layout of every scenario: one-sector chunks make areas of 32
/// exceptions, so a few dozen writes cross an area.
const LAYOUT: Layout = Layout::new(ChunkSize::MIN);
/// The chunk size, in sectors (the snapshot table's parameter).
const CHUNK: u32 = LAYOUT.chunk_sectors();
/// The chunk size in bytes.
const CHUNK_BYTES: usize = LAYOUT.chunk_bytes() as usize;
/// Exceptions per metadata area.
const PER_AREA: u64 = LAYOUT.exceptions_per_area() as u64;
/// Bytes in a sector.
const SECTOR: u64 = SECTOR_SIZE as u64;
/// Bytes of the origin used.
const ORIGIN_BYTES: usize = 64 * 1024;
/// Sectors of the origin used.
const ORIGIN_SECTORS: u64 = ORIGIN_BYTES as u64 / SECTOR;
/// Most runs of one scenario (a bound on a runaway sweep).
const MAX_POINTS: u64 = 4000;

/// What a scenario does while the faults are injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A new store's table load (zeroing area 0, writing the header).
    IoNew,
    /// Origin writes, each committing one exception.
    IoCommit,
    /// Origin writes across the end of area 0.
    IoNextArea,
    /// A merge of snapshot writes back into the origin.
    IoMerge,
    /// A P snapshot overflowing.
    IoDrop,
    /// The table load of a new store, with allocations failed.
    AllocNew,
    /// The table load of a store of two areas, with allocations failed.
    AllocLoad,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Self; 7] = [
        Self::IoNew,
        Self::IoCommit,
        Self::IoNextArea,
        Self::IoMerge,
        Self::IoDrop,
        Self::AllocNew,
        Self::AllocLoad,
    ];

    /// Its name on the command line and in the output.
    pub const fn name(self) -> &'static str {
        match self {
            Self::IoNew => "io-new",
            Self::IoCommit => "io-commit",
            Self::IoNextArea => "io-next-area",
            Self::IoMerge => "io-merge",
            Self::IoDrop => "io-drop",
            Self::AllocNew => "alloc-new",
            Self::AllocLoad => "alloc-load",
        }
    }

    /// The scenario named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Bytes of the COW device. `io-drop`: room for the header, area 0 and
    /// 3 data chunks; the others: two areas and more.
    fn cow_len(self) -> u64 {
        match self {
            Self::IoDrop => (INITIAL_NEXT_FREE + 3) * CHUNK_BYTES as u64,
            _ => 64 * 1024,
        }
    }
}

/// Runs scenario `scenario` of store `store` (`c` or `ours`) on the devices
/// `origin` and `scratch`, its patterns drawn from `seed`. Returns whether
/// every point passed (and there was at least one).
///
/// # Errors
///
/// An unknown scenario or store, devices too small, or a failure of the
/// test itself (device-mapper, fault-injection files, I/O of the checks).
pub fn run(
    scenario: &str,
    store: &str,
    origin: &Path,
    scratch: &Path,
    seed: u64,
) -> io::Result<bool> {
    let scenario = Scenario::parse(scenario)
        .ok_or_else(|| io::Error::other(format!("no scenario {scenario}")))?;
    let cow_len = scenario.cow_len();
    check_sizes(origin, scratch, cow_len)?;
    let env = Env::new(origin, scratch, cow_len)?;
    let mut inj = Inject::new(scratch)?;
    let start = Instant::now();
    let t = match scenario {
        Scenario::IoNew => io_new(&env, &mut inj, seed)?,
        Scenario::IoCommit | Scenario::IoNextArea | Scenario::IoDrop => {
            io_writes(&env, &mut inj, scenario, seed)?
        }
        Scenario::IoMerge => io_merge(&env, &mut inj, seed)?,
        Scenario::AllocNew | Scenario::AllocLoad => alloc(&env, scenario, store, seed)?,
    };
    drop(inj);
    finish(&env, scenario, &t, start)
}

/// Checks that the origin holds [`ORIGIN_BYTES`] and the scratch device
/// `cow_len` bytes.
fn check_sizes(origin: &Path, scratch: &Path, cow_len: u64) -> io::Result<()> {
    let ssize = size(&open_direct(scratch, false)?)?;
    let osize = size(&open_direct(origin, false)?)?;
    if osize < ORIGIN_BYTES as u64 {
        return Err(io::Error::other(format!(
            "{}: smaller than {ORIGIN_BYTES} bytes",
            origin.display()
        )));
    }
    if ssize < cow_len {
        return Err(io::Error::other(format!(
            "{}: smaller than {cow_len} bytes",
            scratch.display()
        )));
    }
    Ok(())
}

/// `io-new`: the table load of a new store over a zeroed COW device, the
/// k-th bio failed.
fn io_new(env: &Env, inj: &mut Inject, seed: u64) -> io::Result<Tally> {
    let s = prepare(env, seed, 0, 0)?;
    let zero = Saved {
        origin: s.origin.clone(),
        cow: vec![0; env.cow_len as usize],
        view: s.view.clone(),
    };
    let one = |k: u64| -> io::Result<(bool, Run)> {
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
        let fired = inj.disarm_io(k, &env.scratch)?;
        Ok((fired, run))
    };
    sweep(env, Scenario::IoNew.name(), one, &zero, false)
}

/// `io-commit`, `io-next-area`, `io-drop`: four origin writes after a few
/// exceptions, the k-th bio failed.
fn io_writes(env: &Env, inj: &mut Inject, scenario: Scenario, seed: u64) -> io::Result<Tally> {
    let (before, writes) = match scenario {
        Scenario::IoCommit => (2, 4),
        Scenario::IoNextArea => (PER_AREA - 2, 4),
        _ => (1, 4),
    };
    let s = prepare(env, seed, before, 0)?;
    let one = |k: u64| -> io::Result<(bool, Run)> {
        env.restore(&s)?;
        let mut armed = false;
        let run = origin_writes(env, &s, seed, before, writes, &mut || {
            armed = true;
            inj.arm_io(k)
        });
        let fired = if armed {
            inj.disarm_io(k, &env.scratch)?
        } else {
            false
        };
        let run = run?;
        if !armed {
            return Err(io::Error::other("the fault was never armed"));
        }
        Ok((fired, run))
    };
    sweep(env, scenario.name(), one, &s, false)
}

/// `io-merge`: the merge of six snapshot writes, the k-th bio failed.
fn io_merge(env: &Env, inj: &mut Inject, seed: u64) -> io::Result<Tally> {
    let s = prepare(env, seed, 2, 6)?;
    let one = |k: u64| -> io::Result<(bool, Run)> {
        env.restore(&s)?;
        env.ctl.create(SNAP)?;
        env.ctl.load(
            SNAP,
            &[tgt(
                ORIGIN_SECTORS,
                "snapshot-merge",
                &env.snapshot_params(),
            )],
        )?;
        inj.arm_io(k)?;
        let resumed = env.ctl.resume(SNAP);
        let st = env.wait_merged();
        let fired = inj.disarm_io(k, &env.scratch)?;
        resumed?;
        let run = Run {
            invalidated: st.contains("Invalid"),
            what: st,
            ..Run::default()
        };
        Ok((fired, run))
    };
    sweep(env, Scenario::IoMerge.name(), one, &s, true)
}

/// `alloc-new`, `alloc-load`: the table load of a new store, or of a store
/// of two areas, the n-th allocation with `store`'s code on the stack
/// failed.
fn alloc(env: &Env, scenario: Scenario, store: &str, seed: u64) -> io::Result<Tally> {
    let s = if scenario == Scenario::AllocNew {
        let s = prepare(env, seed, 0, 0)?;
        Saved {
            cow: vec![0; env.cow_len as usize],
            ..s
        }
    } else {
        prepare(env, seed, PER_AREA + 6, 0)?
    };
    let range = store_text(store)?;
    println!(
        "{}: allocations with {store}'s code at {:#x}..{:#x} on the stack",
        scenario.name(),
        range.0,
        range.1
    );
    filter_allocations(Some(range))?;
    let nth = Nth::open()?;
    let one = |n: u64| -> io::Result<(bool, Run)> {
        env.restore(&s)?;
        let dev = env.device(SNAP)?;
        let params = env.snapshot_params();
        let target = [tgt(ORIGIN_SECTORS, "snapshot", &params)];
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
                // A load that survived the fault must show all of the
                // snapshot (a lost exception shows the origin's new data).
                check_view(&dev.node(), &s, &mut run)?;
            }
            Err(e) => {
                run.refused = Some(env.ctl.last_errno());
                run.what = format!("refused: {e}");
                env.keep(dev);
            }
        }
        Ok((fired, run))
    };
    sweep(env, scenario.name(), one, &s, false)
}

/// Lifts the allocation filter, removes the devices and prints the closing
/// line; whether the scenario passed.
fn finish(env: &Env, scenario: Scenario, t: &Tally, start: Instant) -> io::Result<bool> {
    filter_allocations(None)?;
    let _ = env.teardown_all();
    let _ = remove(&env.ctl, COW);
    println!(
        "fault {}: {} points, {} failed, {} invalidations lost ({} s)",
        scenario.name(),
        t.points,
        t.failed,
        t.lost_invalidation,
        start.elapsed().as_secs()
    );
    Ok(t.failed == 0 && t.points > 0)
}
