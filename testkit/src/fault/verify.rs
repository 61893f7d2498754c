// SPDX-License-Identifier: GPL-2.0-only

//! The sweep of a scenario over its fault points, and the check of what
//! each run left on the devices.

use std::io;
use std::path::Path;

use snap_tools::check::check;
use snap_tools::check::CheckOptions;
use snap_tools::check::Kind;
use snap_tools::io::MemIo;
use snap_tools::progress::Progress;

use super::env::chunk_of;
use super::env::pattern;
use super::env::put_chunk;
use super::env::write_chunk;
use super::env::Env;
use super::env::Saved;
use super::env::SNAP;
use super::CHUNK_BYTES;
use super::MAX_POINTS;
use super::ORIGIN_BYTES;
use crate::blockdev::open_direct;
use crate::blockdev::read_all;

/// What one run of a scenario did.
#[derive(Default)]
pub(super) struct Run {
    /// Whether the snapshot was seen invalid (or the merge failed).
    pub(super) invalidated: bool,
    /// The origin as it must be now (None: checked after the merge).
    pub(super) origin: Option<Vec<u8>>,
    /// The run went wrong in itself (an origin write failed).
    pub(super) broken: bool,
    /// The table load was refused (with this errno).
    pub(super) refused: Option<i32>,
    /// A line for the log.
    pub(super) what: String,
}

/// The points of a scenario and their outcomes.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) points: u64,
    pub(super) failed: u64,
    pub(super) lost_invalidation: u64,
}

enum Verdict {
    Good(String),
    InvalidationLost(String),
    Bad(String),
}

/// Origin writes through a snapshot-origin device while a snapshot is
/// active; `arm` runs between the devices' creation and the writes.
pub(super) fn origin_writes(
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

/// Runs `one` at the fault points 1, 2, ... of scenario `name` from the
/// starting point `s` until a point is never reached, checking each run.
pub(super) fn sweep(
    env: &Env,
    name: &str,
    mut one: impl FnMut(u64) -> io::Result<(bool, Run)>,
    s: &Saved,
    merge: bool,
) -> io::Result<Tally> {
    check_start(env, name, s, merge)?;
    let mut t = Tally::default();
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
        record(&mut t, name, k, &run, verify(env, s, &run, merge, true));
        env.teardown()?;
    }
    Err(io::Error::other(format!(
        "{name}: more than {MAX_POINTS} points"
    )))
}

/// The starting point itself, loaded without a fault, must pass: points
/// that leave both devices as they were then load the same way (see
/// [`verify`]).
fn check_start(env: &Env, name: &str, s: &Saved, merge: bool) -> io::Result<()> {
    env.restore(s)?;
    let start = Run {
        origin: Some(s.origin.clone()),
        ..Run::default()
    };
    match verify(env, s, &start, merge, false)? {
        Verdict::Good(what) => println!("{name} starting point: {what}"),
        Verdict::InvalidationLost(what) | Verdict::Bad(what) => {
            return Err(io::Error::other(format!(
                "{name}: the starting point does not load: {what}"
            )));
        }
    }
    env.teardown()
}

/// Counts and prints the outcome of point `k`.
fn record(t: &mut Tally, name: &str, k: u64, run: &Run, verdict: io::Result<Verdict>) {
    match verdict {
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
}

/// Marks the run broken if the live snapshot `node` does not show `s.view`.
pub(super) fn check_view(node: &Path, s: &Saved, run: &mut Run) -> io::Result<()> {
    let view = read_all(&open_direct(node, false)?, 0, ORIGIN_BYTES)?;
    if !run.what.contains("Invalid") && view != s.view {
        run.broken = true;
        run.what += "; the loaded snapshot does not show its data";
    }
    Ok(())
}

/// Loads the COW device again with no fault and checks it against what the
/// run did.
/// With `shortcut`, a run that left the origin and the COW device exactly
/// as the starting point is not loaded again: [`sweep`] has checked that
/// load once, and the store keeps nothing from one load to the next.
fn verify(env: &Env, s: &Saved, run: &Run, merge: bool, shortcut: bool) -> io::Result<Verdict> {
    if let Some(v) = check_devices(env, s, run, merge, shortcut)? {
        return Ok(v);
    }
    let node = match if merge { env.merge() } else { env.snapshot() } {
        Ok(n) => n,
        Err(e) => return Ok(Verdict::Bad(format!("the COW device no longer loads: {e}"))),
    };
    reloaded(env, s, run, merge, &node)
}

/// The checks of the devices before the reload: what the run did to the
/// origin and the COW device, and `snap_check`. A verdict if they give one.
fn check_devices(
    env: &Env,
    s: &Saved,
    run: &Run,
    merge: bool,
    shortcut: bool,
) -> io::Result<Option<Verdict>> {
    if run.broken {
        return Ok(Some(Verdict::Bad("the run went wrong".into())));
    }
    if let Some(o) = &run.origin {
        if &env.read_origin()? != o {
            return Ok(Some(Verdict::Bad(
                "the origin does not hold what was written to it".into(),
            )));
        }
    }
    let cow = env.read_cow()?;
    if run.refused.is_some() && s.cow.iter().any(|&b| b != 0) && cow != s.cow {
        return Ok(Some(Verdict::Bad(
            "a refused table load changed the COW device".into(),
        )));
    }
    if shortcut && !merge && cow == s.cow && run.origin.as_ref() == Some(&s.origin) {
        return Ok(Some(Verdict::Good("devices unchanged".into())));
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
        return Ok(Some(Verdict::Bad(format!(
            "snap_check: {}",
            problems.join("; ")
        ))));
    }
    Ok(None)
}

/// The verdict on the snapshot (or merge) reloaded at `node` with no fault.
fn reloaded(env: &Env, s: &Saved, run: &Run, merge: bool, node: &Path) -> io::Result<Verdict> {
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
            read_all(&open_direct(node, false)?, 0, ORIGIN_BYTES)?,
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
