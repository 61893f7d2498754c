// SPDX-License-Identifier: GPL-2.0-only

//! The crash replay in the kernel, behind `crash_replay`: replays a
//! dm-log-writes log of a snapshot's origin and COW device at every crash
//! point, activates a snapshot over each and checks it.
//!
//! ```text
//! crash_replay --log DEV --origin-len BYTES --cow-len BYTES --chunk SECTORS
//!              --scratch-origin DEV[,DEV] --scratch-cow DEV[,DEV] --label TEXT
//!              [--cow-start BYTES] [--type P|PO] [--from-mark TEXT]
//!              [--points durable,mark-plus,torn,every|none] [--points-from MARK]
//!              [--drop-commit K] [--stop-after-lost N] [--max-report N]
//!              [--subsets on|off] [--subset-kernel N] [--subset-seed N]
//!              [--plain-commit K]
//! ```
//!
//! The origin lies at byte 0 of the logged device, the COW device at
//! `--cow-start` (default: right after the origin). Points start at the mark
//! `--from-mark` (default `setup-done`), where the oracle also takes the
//! origin's original contents, or at the later mark `--points-from`.
//! `every` makes every entry a point (the `durable` points among them).
//! `--drop-commit K` leaves the K-th FUA metadata write to the COW device
//! (after the header) out of the replay, to show the oracle can fail.
//!
//! With two scratch pairs (`--scratch-origin A,B --scratch-cow A,B`), one
//! dm device serves every point: each point's table is loaded over the pair
//! the live table does not use and made live by a resume, which destroys
//! the table before it. A new snapshot never shares its COW device with the
//! live one, so dm-snapshot reads the metadata from the device (no
//! handover), and a point costs no device creation and removal. With one
//! pair, each point creates and removes a device.
//!
//! `--points` names the variants (`none` for no point). Then come the
//! subset states (`--subsets off` leaves them out; see
//! [`crate::subset`]): every one is judged at the format level
//! ([`crate::judge`]), and a seeded sample of `--subset-kernel` of them
//! (default 16) is also loaded in the kernel like a point. `--subset-seed`
//! draws the random subsets and the sample (printed). `--plain-commit K`
//! treats the K-th metadata write (counted as `--drop-commit` counts) as a
//! plain write in the subset model, to show that the model can fail.
//!
//! Prints a line for each point or subset state that fails and ends
//! ([`Totals::report`]) with `crash-replay LABEL: N points, N lost, N
//! failed activations` and `crash-subsets LABEL: N states, N lost` (a
//! subset state loaded in the kernel that fails to activate counts as
//! lost). Exit status of `crash_replay`: 0 all good, 3 some lost or failed,
//! 2 the replay could not run.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

use snap_format::DiskHeader;
use snap_format::SECTOR_SIZE;
use snap_tools::check::check;
use snap_tools::check::CheckOptions;
use snap_tools::check::Kind;
use snap_tools::progress::Progress;
use snap_tools::snap_format::BlockSizes;

use super::commit_writes;
use super::crash_points;
use super::Geometry;
use super::Point;
use super::PointOptions;
use super::Replayer;
use crate::blockdev::open_direct;
use crate::blockdev::read_all;
use crate::blockdev::write_all;
use crate::blockdev::write_changed;
use crate::blockdev::DirectReader;
use crate::dm::Control;
use crate::dm::Device;
use crate::dm::Target;
use crate::judge::Judgement;
use crate::judge::SliceIo;
use crate::log::Log;
use crate::oracle::Cut;
use crate::oracle::Oracle;
use crate::subset::kernel_sample;
use crate::subset::Model;
use crate::subset::ModelOptions;
use crate::subset::SubsetJudge;
use crate::subset::DEFAULT_SEED;

/// The variants `--points` may name.
const POINT_NAMES: [&str; 5] = ["durable", "mark-plus", "torn", "every", "none"];

/// The command line of `crash_replay`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// `--log`: the log-writes log device.
    pub log: PathBuf,
    /// `--origin-len`: bytes of the origin.
    pub origin_len: u64,
    /// `--cow-len`: bytes of the COW device.
    pub cow_len: u64,
    /// `--cow-start`: where the COW device lies on the logged device.
    pub cow_start: Option<u64>,
    /// `--chunk`: the snapshot's chunk size, in sectors.
    pub chunk: u64,
    /// `--type`: `P` or `PO`.
    pub kind: String,
    /// `--scratch-origin`: one or two origin devices.
    pub scratch_origin: Vec<PathBuf>,
    /// `--scratch-cow`: one or two COW devices.
    pub scratch_cow: Vec<PathBuf>,
    /// `--label`: the name of the replay in the output.
    pub label: String,
    /// `--from-mark`: where the oracle starts.
    pub from_mark: String,
    /// `--points`: the variants of crash points.
    pub points: String,
    /// `--points-from`: a later mark where the points start.
    pub points_from: Option<String>,
    /// `--drop-commit`: the metadata write left out of the replay.
    pub drop_commit: Option<usize>,
    /// `--stop-after-lost`: stop after this many lost points.
    pub stop_after_lost: Option<usize>,
    /// `--max-report`: failing points printed.
    pub max_report: usize,
    /// `--subsets`: whether the subset states are judged.
    pub subsets: bool,
    /// `--subset-kernel`: subset states loaded in the kernel.
    pub subset_kernel: usize,
    /// `--subset-seed`: the seed of the subset states and their sample.
    pub subset_seed: u64,
    /// `--plain-commit`: the metadata write the subset model takes as plain.
    pub plain_commit: Option<usize>,
}

impl Args {
    /// Parses the arguments after the program name.
    ///
    /// # Errors
    ///
    /// The message for a bad command line.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut a = Self {
            log: PathBuf::new(),
            origin_len: 0,
            cow_len: 0,
            cow_start: None,
            chunk: 0,
            kind: "P".into(),
            scratch_origin: Vec::new(),
            scratch_cow: Vec::new(),
            label: "replay".into(),
            from_mark: "setup-done".into(),
            points: "durable,mark-plus,torn".into(),
            points_from: None,
            drop_commit: None,
            stop_after_lost: None,
            max_report: 20,
            subsets: true,
            subset_kernel: 16,
            subset_seed: DEFAULT_SEED,
            plain_commit: None,
        };
        let mut it = args.into_iter();
        while let Some(k) = it.next() {
            let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
            a.set(&k, v)?;
        }
        a.validate()?;
        Ok(a)
    }

    /// Sets option `k` to `v`.
    fn set(&mut self, k: &str, v: String) -> Result<(), String> {
        let n = || {
            v.parse::<u64>()
                .map_err(|_| format!("{k}: not a number: {v}"))
        };
        let a = self;
        match k {
            "--log" => a.log = v.clone().into(),
            "--origin-len" => a.origin_len = n()?,
            "--cow-len" => a.cow_len = n()?,
            "--cow-start" => a.cow_start = Some(n()?),
            "--chunk" => a.chunk = n()?,
            "--type" => a.kind = v.clone(),
            "--scratch-origin" => a.scratch_origin = v.split(',').map(PathBuf::from).collect(),
            "--scratch-cow" => a.scratch_cow = v.split(',').map(PathBuf::from).collect(),
            "--label" => a.label = v.clone(),
            "--from-mark" => a.from_mark = v.clone(),
            "--points" => a.points = v.clone(),
            "--points-from" => a.points_from = Some(v.clone()),
            "--drop-commit" => a.drop_commit = Some(n()? as usize),
            "--stop-after-lost" => a.stop_after_lost = Some(n()? as usize),
            "--max-report" => a.max_report = n()? as usize,
            "--subsets" => {
                a.subsets = match v.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return Err(format!("{k}: on or off, not {v}")),
                }
            }
            "--subset-kernel" => a.subset_kernel = n()? as usize,
            "--subset-seed" => a.subset_seed = parse_seed(&v)?,
            "--plain-commit" => a.plain_commit = Some(n()? as usize),
            _ => return Err(format!("unknown option {k}")),
        }
        Ok(())
    }

    /// Checks the options that go together.
    fn validate(&self) -> Result<(), String> {
        let a = self;
        if let Some(bad) = a.points.split(',').find(|p| !POINT_NAMES.contains(p)) {
            return Err(format!(
                "--points: unknown variant {bad} (one of {})",
                POINT_NAMES.join(", ")
            ));
        }
        if a.origin_len == 0 || a.cow_len == 0 || a.chunk == 0 || a.log.as_os_str().is_empty() {
            return Err("--log, --origin-len, --cow-len and --chunk are required".into());
        }
        if a.scratch_origin.is_empty()
            || a.scratch_origin.len() > 2
            || a.scratch_origin.len() != a.scratch_cow.len()
        {
            return Err(
                "--scratch-origin and --scratch-cow name one or two devices each, as many of each"
                    .into(),
            );
        }
        Ok(())
    }

    /// The crash points `--points` asks for, from entry `from` on.
    fn point_options(&self, from: usize) -> PointOptions {
        let has = |s: &str| self.points.split(',').any(|p| p == s);
        PointOptions {
            from,
            durable: has("durable"),
            mark_plus: has("mark-plus"),
            torn: has("torn"),
            every: has("every"),
        }
    }
}

/// A seed in decimal or, after `0x`, hexadecimal.
fn parse_seed(v: &str) -> Result<u64, String> {
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    }
    .map_err(|_| format!("--subset-seed: not a number: {v}"))
}

/// A scratch origin and COW device, with what the origin holds.
struct Pair {
    origin_path: PathBuf,
    cow_path: PathBuf,
    so: File,
    sc: File,
    /// The origin image last written to `so`: the snapshot never writes to
    /// its origin, so only blocks that differ need writing.
    origin: Option<Vec<u8>>,
}

enum Outcome {
    Good,
    Lost(String),
    Failed(String),
}

/// Bytes in a sector.
const SECTOR: u64 = SECTOR_SIZE as u64;

/// The stages of a point, timed for the closing line.
const STAGES: [&str; 5] = ["check", "write", "activate", "read", "remove"];

struct Run<'a> {
    a: &'a Args,
    ctl: Control,
    oracle: &'a Oracle,
    blocks: BlockSizes,
    pairs: Vec<Pair>,
    /// The pair under the live table of `dev`, when it has one.
    live: Option<usize>,
    /// The device reused by every point, with two pairs.
    dev: Option<Device>,
    name: String,
    block: usize,
    /// Time spent in each stage of a point, for the closing line.
    times: [f64; 5],
}

impl<'a> Run<'a> {
    /// Opens the scratch pairs of `a` for a log of sectors of `sectorsize`
    /// bytes.
    fn new(a: &'a Args, oracle: &'a Oracle, sectorsize: u32) -> io::Result<Self> {
        Ok(Self {
            a,
            ctl: Control::open()?,
            oracle,
            blocks: BlockSizes::new(sectorsize, sectorsize)
                .map_err(|e| io::Error::other(e.to_string()))?,
            pairs: a
                .scratch_origin
                .iter()
                .zip(&a.scratch_cow)
                .map(|(o, c)| {
                    Ok(Pair {
                        origin_path: o.clone(),
                        cow_path: c.clone(),
                        so: open_direct(o, true)?,
                        sc: open_direct(c, true)?,
                        origin: None,
                    })
                })
                .collect::<io::Result<_>>()?,
            live: None,
            dev: None,
            name: format!("crash-replay-{}", std::process::id()),
            block: sectorsize.max(SECTOR_SIZE) as usize,
            times: [0.0; 5],
        })
    }

    fn lap(&mut self, stage: usize, t: &mut Instant) {
        self.times[stage] += t.elapsed().as_secs_f64();
        *t = Instant::now();
    }

    /// Loads the state with these images in the kernel and checks the
    /// snapshot against the oracle, `cut` saying what the state holds.
    fn point(&mut self, cut: &Cut<'_>, origin: &[u8], cow: &[u8]) -> io::Result<Outcome> {
        let mut t = Instant::now();
        if let Some(lost) = self.check_metadata(cow)? {
            self.lap(0, &mut t);
            return Ok(lost);
        }
        self.lap(0, &mut t);
        let (k, params) = self.write_pair(origin, cow)?;
        self.lap(1, &mut t);
        let reuse = self.pairs.len() == 2;
        let dev = match (&self.dev, reuse) {
            (Some(d), true) => d.clone(),
            _ => {
                let d = self.ctl.create(&self.name)?;
                if reuse {
                    self.dev = Some(d.clone());
                }
                d
            }
        };
        let table = [Target {
            start: 0,
            len: self.a.origin_len / SECTOR,
            kind: "snapshot",
            params: &params,
        }];
        if let Err(e) = self.ctl.load(&self.name, &table) {
            // With a reused device, the live table (if any) stays.
            if !reuse {
                self.ctl.remove(&self.name)?;
            }
            return Ok(Outcome::Failed(format!("table refused: {e}")));
        }
        self.ctl.resume(&self.name)?;
        if reuse {
            self.live = Some(k);
        }
        let r = self.check_device(cut, &dev, cow, &mut t);
        if !reuse {
            self.ctl.remove(&self.name)?;
        }
        self.lap(4, &mut t);
        r
    }

    /// `snap_check` on the COW image: the outcome if it loses the state. A
    /// store marked invalid, or none yet, is a state a crash may leave;
    /// whether the snapshot loads accordingly is checked in the kernel.
    fn check_metadata(&self, cow: &[u8]) -> io::Result<Option<Outcome>> {
        let mut problems = Vec::new();
        check(
            &SliceIo(cow),
            &CheckOptions {
                blocks: self.blocks,
                ..CheckOptions::default()
            },
            &mut Progress::silent(),
            |pr| {
                if !matches!(pr.kind, Kind::SnapshotInvalid | Kind::NoStore) {
                    problems.push(pr.to_string());
                }
            },
        )?;
        Ok((!problems.is_empty())
            .then(|| Outcome::Lost(format!("snap_check: {}", problems.join("; ")))))
    }

    /// Writes the images to a pair (two pairs: the one the live table does
    /// not use; one: that one); the pair and the snapshot table's
    /// parameters over it.
    fn write_pair(&mut self, origin: &[u8], cow: &[u8]) -> io::Result<(usize, String)> {
        let k = match (self.pairs.len(), self.live) {
            (2, Some(0)) => 1,
            _ => 0,
        };
        let pair = &mut self.pairs[k];
        match &pair.origin {
            Some(old) => {
                write_changed(&pair.so, old, origin, self.block)?;
            }
            None => write_all(&pair.so, 0, origin)?,
        }
        pair.origin = Some(origin.to_vec());
        write_all(&pair.sc, 0, cow)?;
        let params = format!(
            "{} {} {} {}",
            pair.origin_path.display(),
            pair.cow_path.display(),
            self.a.kind,
            self.a.chunk
        );
        Ok((k, params))
    }

    /// Removes the reused device, if any.
    fn finish(&mut self) -> io::Result<()> {
        if self.dev.take().is_some() {
            self.ctl.remove(&self.name)?;
        }
        Ok(())
    }

    fn check_device(
        &mut self,
        cut: &Cut<'_>,
        dev: &Device,
        cow: &[u8],
        t: &mut Instant,
    ) -> io::Result<Outcome> {
        let status = self.ctl.status(&self.name)?;
        self.lap(2, t);
        if status.starts_with("Invalid") {
            let valid = DiskHeader::decode(cow)
                .map_err(|e| io::Error::other(format!("the COW header: {e}")))?
                .valid;
            return Ok(if valid == 0 {
                Outcome::Good
            } else {
                Outcome::Lost(format!(
                    "snapshot loads Invalid but the COW header says valid ({valid})"
                ))
            });
        }
        let f = open_direct(&dev.node(), false)?;
        let view = read_all(&f, 0, self.a.origin_len as usize)?;
        self.lap(3, t);
        Ok(match self.oracle.check_view(cut, &view) {
            Ok(()) => Outcome::Good,
            Err(lost) => Outcome::Lost(lost.to_string()),
        })
    }
}

/// What a replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Crash points loaded.
    pub points: usize,
    /// Points that lost data.
    pub lost: usize,
    /// Points whose snapshot failed to activate.
    pub failed: usize,
    /// Subset states judged and lost, if they were.
    pub subsets: Option<(usize, usize)>,
}

impl Totals {
    /// Prints the closing lines of the replay `label`; whether nothing was
    /// lost and no activation failed.
    pub fn report(&self, label: &str) -> bool {
        println!(
            "crash-replay {label}: {} points, {} lost, {} failed activations",
            self.points, self.lost, self.failed
        );
        let mut bad = self.lost + self.failed;
        if let Some((n, lost)) = self.subsets {
            println!("crash-subsets {label}: {n} states, {lost} lost");
            bad += lost;
        }
        bad == 0
    }
}

/// Prints a failing point's line, the first `max_report` of them.
struct Reporter {
    max: usize,
    reported: usize,
}

impl Reporter {
    fn line(&mut self, line: &str) {
        if self.reported < self.max {
            println!("{line}");
        }
        self.reported += 1;
    }
}

/// The log and what the replay derives from it before loading anything.
struct Setup<'l> {
    log: &'l Log,
    geo: Geometry,
    /// The entry of `--from-mark`.
    from: usize,
    replayer: Replayer<'l>,
    oracle: Oracle,
    opts: PointOptions,
    points: Vec<Point>,
    /// The entries `--drop-commit` leaves out.
    dropped: Vec<usize>,
}

/// Reads the log of `a`.
fn read_log(a: &Args) -> io::Result<Log> {
    Log::parse(DirectReader::new(open_direct(&a.log, false)?, 1 << 20)).map_err(io::Error::other)
}

impl<'l> Setup<'l> {
    /// The geometry, oracle, crash points and dropped commit of `a` over
    /// `log`.
    fn new(a: &Args, log: &'l Log) -> io::Result<Self> {
        let geo = Geometry {
            origin_start: 0,
            origin_len: a.origin_len,
            cow_start: a.cow_start.unwrap_or(a.origin_len),
            cow_len: a.cow_len,
        };
        let from = log
            .find_mark(&a.from_mark)
            .ok_or_else(|| io::Error::other(format!("no mark {} in the log", a.from_mark)))?;
        let mut replayer = Replayer::new(log, geo);
        let original = replayer.advance(from + 1).origin.clone();
        let oracle = Oracle::new(log, &geo, original, replayer.acks());
        // Crash points start after `--points-from` when given (the merge's
        // mark), else where the oracle starts.
        let points_from = match &a.points_from {
            Some(mark) => log
                .find_mark(mark)
                .ok_or_else(|| io::Error::other(format!("no mark {mark} in the log")))?
                .checked_add(1)
                .ok_or_else(|| io::Error::other("log too long"))?,
            None => from + 1,
        };
        let opts = a.point_options(points_from.max(from + 1));
        let points = crash_points(log, &opts);
        let mut s = Self {
            log,
            geo,
            from,
            replayer,
            oracle,
            opts,
            points,
            dropped: Vec::new(),
        };
        if let Some(k) = a.drop_commit {
            s.dropped = vec![s.pick_commit(a, k, "dropping")?];
        }
        s.replayer.drop_entries(s.dropped.clone());
        Ok(s)
    }

    /// The entry of the `k`-th commit from the oracle's start on (see
    /// [`commit_writes`]), announced as `what`.
    fn pick_commit(&self, a: &Args, k: usize, what: &str) -> io::Result<usize> {
        let commits = commit_writes(self.log, &self.geo, self.from + 1);
        let i = *commits
            .get(k.saturating_sub(1))
            .ok_or_else(|| io::Error::other(format!("no metadata write {k} to pick")))?;
        let e = &self.log.entries[i];
        println!(
            "{}: {what} metadata write at entry {i} ({} bytes at COW offset {})",
            a.label,
            e.len,
            e.offset - self.geo.cow_start
        );
        Ok(i)
    }

    /// The subset model of `a` over the log.
    fn model(&self, a: &Args) -> io::Result<Model<'l>> {
        let plain = match a.plain_commit {
            Some(k) => Some(self.pick_commit(a, k, "treating as plain")?),
            None => None,
        };
        Ok(Model::new(
            self.log,
            self.geo,
            &ModelOptions {
                from: self.opts.from,
                dropped: self.dropped.clone(),
                plain,
            },
        ))
    }
}

/// Replays the log `a` names at its crash points and subset states.
///
/// # Errors
///
/// The log cannot be read or lacks a mark, or a device cannot be written
/// or set up (a failure of the replay, not a lost point).
pub fn run(a: &Args) -> io::Result<Totals> {
    let t0 = Instant::now();
    let log = read_log(a)?;
    let mut s = Setup::new(a, &log)?;
    eprintln!(
        "{}: log of {} entries (sectorsize {}), {} snapshot writes, {} crash points",
        a.label,
        log.entries.len(),
        log.sectorsize,
        s.oracle.snapshot_writes(),
        s.points.len()
    );
    let mut run = Run::new(a, &s.oracle, log.sectorsize)?;
    let mut report = Reporter {
        max: a.max_report,
        reported: 0,
    };
    let mut totals = replay_points(&mut run, &mut s.replayer, &s.points, &mut report)?;
    if a.subsets && a.stop_after_lost.is_none_or(|n| totals.lost < n) {
        let model = s.model(a)?;
        totals.subsets = Some(replay_subsets(&mut run, &model, &mut report)?);
    }
    run.finish()?;
    closing(a, &run, &report, t0);
    Ok(totals)
}

/// The count of failing lines not shown, and the times of the stages.
fn closing(a: &Args, run: &Run<'_>, report: &Reporter, t0: Instant) {
    if report.reported > a.max_report {
        println!(
            "{}: {} more failing points or subset states not shown",
            a.label,
            report.reported - a.max_report
        );
    }
    let stages: Vec<String> = STAGES
        .iter()
        .zip(run.times)
        .map(|(n, t)| format!("{n} {t:.1}"))
        .collect();
    eprintln!(
        "{}: {:.1} s ({}; {} busy removes retried)",
        a.label,
        t0.elapsed().as_secs_f64(),
        stages.join(", "),
        run.ctl.busy_retries()
    );
}

/// Loads every crash point in the kernel and checks it.
fn replay_points(
    run: &mut Run<'_>,
    replayer: &mut Replayer<'_>,
    points: &[Point],
    report: &mut Reporter,
) -> io::Result<Totals> {
    let a = run.a;
    let mut totals = Totals::default();
    // A point whose images equal those of the point tested before it (a
    // flush after a flush, a mark that adds nothing) is skipped, not counted.
    let mut same = 0usize;
    let mut last_cow: Option<Vec<u8>> = None;
    let mut last_origin: Option<Vec<u8>> = None;
    for &p in points {
        let st = replayer.state(p);
        if last_origin.as_deref() == Some(&st.origin[..])
            && last_cow.as_deref() == Some(&st.cow[..])
        {
            same += 1;
            continue;
        }
        last_cow = Some(st.cow.to_vec());
        last_origin = Some(st.origin.to_vec());
        totals.points += 1;
        let holds = |e: usize| p.holds(e);
        let cut = Cut {
            acked_by: p.entry,
            holds: &holds,
        };
        match run.point(&cut, &st.origin, &st.cow)? {
            Outcome::Good => {}
            Outcome::Lost(why) => {
                totals.lost += 1;
                report.line(&format!("LOST {} {p}: {why}", a.label));
            }
            Outcome::Failed(why) => {
                totals.failed += 1;
                report.line(&format!("FAILED-ACTIVATION {} {p}: {why}", a.label));
            }
        }
        if a.stop_after_lost.is_some_and(|n| totals.lost >= n) {
            break;
        }
    }
    if same > 0 {
        eprintln!(
            "{}: {same} points skipped: same images as the point before",
            a.label
        );
    }
    Ok(totals)
}

/// Judges every subset state at the format level, and loads the seeded
/// sample of them in the kernel as well: (states, lost).
fn replay_subsets(
    run: &mut Run<'_>,
    model: &Model<'_>,
    report: &mut Reporter,
) -> io::Result<(usize, usize)> {
    let a = run.a;
    let t0 = Instant::now();
    let states = model.states(a.subset_seed);
    let sample = kernel_sample(&states, a.subset_kernel, a.subset_seed);
    let oracle = run.oracle;
    let mut judge = SubsetJudge::new(model, run.blocks);
    let (mut judged, mut lost, mut loaded) = (0, 0, 0);
    let mut kernel_time = 0.0;
    for (st, &load) in states.iter().zip(&sample) {
        let (j, kernel) = judge.judge(oracle, st, |_, origin, cow| {
            if !load {
                return Ok(Outcome::Good);
            }
            let t = Instant::now();
            let holds = |e: usize| st.holds(e);
            let cut = Cut {
                acked_by: st.point.entry,
                holds: &holds,
            };
            let outcome = run.point(&cut, origin, cow);
            kernel_time += t.elapsed().as_secs_f64();
            outcome
        });
        judged += 1;
        loaded += usize::from(load);
        let why = lost_why(j).or(match kernel? {
            Outcome::Good => None,
            Outcome::Lost(why) => Some(format!("in the kernel: {why}")),
            Outcome::Failed(why) => Some(format!("failed activation in the kernel: {why}")),
        });
        if let Some(why) = why {
            lost += 1;
            report.line(&format!("LOST {} {st}: {why}", a.label));
            if a.stop_after_lost.is_some_and(|n| lost >= n) {
                break;
            }
        }
    }
    eprintln!(
        "{}: {judged} subset states at {} points (seed {:#x}), {loaded} of them loaded in the kernel; {:.1} s ({kernel_time:.1} s in the kernel)",
        a.label,
        model.points().len(),
        a.subset_seed,
        t0.elapsed().as_secs_f64(),
    );
    Ok((judged, lost))
}

/// Why a format-level judgement loses the state, if it does.
fn lost_why(j: Judgement) -> Option<String> {
    match j {
        Judgement::Good | Judgement::Invalid => None,
        Judgement::Lost(why) => Some(why),
    }
}
