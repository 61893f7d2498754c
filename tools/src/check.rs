// SPDX-License-Identifier: GPL-2.0-only

//! `snap_check`: reads the header and every metadata area of a COW device
//! and reports each problem found.
//!
//! The rules are the format core's: the header decision ([`read_header`]
//! through [`read_device_header`]) and the module's activation [`Scan`],
//! driven with [`Scan::check_area`], which goes on past a broken record so
//! that every problem is reported; the first one is where the module would
//! refuse the store ([`Verdict`]). On top of the module's rules it finds
//! duplicate `old_chunk` and `new_chunk` values, in memory that does not
//! grow with the number of exceptions ([`crate::duplicates`]);
//! `duplicates: false` turns that off.
//!
//! Header problems stop the check: without a trusted chunk size the areas
//! cannot be found.
//!
//! C source: `read_header()`, `read_exceptions()` in [drivers/md/dm-snap-persistent.c](srctree/drivers/md/dm-snap-persistent.c)
//!
//! [`read_header`]: snap_format::read_header

use std::fmt;
use std::io;

use snap_format::AreaFill;
use snap_format::BlockSizes;
use snap_format::DiskHeader;
use snap_format::Error;
use snap_format::Exception;
use snap_format::HeaderDecision;
use snap_format::Layout;
use snap_format::Scan;
use snap_format::ScanResult;
use snap_format::Stopped;
use snap_format::Warning;
use snap_format::SNAP_MAGIC;

use crate::dump::read_area;
use crate::duplicates::NewChunks;
use crate::duplicates::OldChunkFilter;
use crate::header::read_device_header;
use crate::header::HeaderError;
use crate::io::BlockIo;
use crate::progress::Progress;

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The store loads, but something is off (`--ignore-non-fatal-errors`
    /// accepts it).
    Warning,
    /// The store is damaged: the module refuses it, or it would give wrong
    /// data.
    Error,
}

impl Severity {
    /// `"warning"` or `"error"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a problem; [`Kind::as_str`] is its stable machine-readable
/// name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The device is shorter than a header.
    DeviceTooSmall,
    /// Magic 0: no store (the module would start a new one).
    NoStore,
    /// Magic neither 0 nor `SnAp`.
    BadMagic,
    /// Header version is not 1.
    BadVersion,
    /// Header chunk size breaks the chunk-size rules.
    BadChunkSize,
    /// The snapshot is marked invalid (`valid` 0).
    SnapshotInvalid,
    /// `valid` is neither 0 nor 1.
    InvalidFlag,
    /// A metadata area to read lies beyond the device end.
    AreaBeyondDevice,
    /// `new_chunk` at or after the device end.
    NewChunkBeyondDevice,
    /// `new_chunk` is a metadata chunk.
    NewChunkIsMetadata,
    /// `new_chunk` is the header chunk.
    NewChunkIsHeader,
    /// `old_chunk` beyond the largest possible origin.
    OldChunkTooLarge,
    /// An `old_chunk` seen in an earlier exception.
    DuplicateOldChunk,
    /// A `new_chunk` seen in an earlier exception.
    DuplicateNewChunk,
    /// Nonzero records after the end marker.
    GarbageAfterEndMarker,
    /// Any other format-core error (arithmetic overflow on absurd sizes).
    Other,
}

impl Kind {
    /// The machine-readable name (`snake_case`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DeviceTooSmall => "device_too_small",
            Self::NoStore => "no_store",
            Self::BadMagic => "bad_magic",
            Self::BadVersion => "bad_version",
            Self::BadChunkSize => "bad_chunk_size",
            Self::SnapshotInvalid => "snapshot_invalid",
            Self::InvalidFlag => "invalid_flag",
            Self::AreaBeyondDevice => "area_beyond_device",
            Self::NewChunkBeyondDevice => "new_chunk_beyond_device",
            Self::NewChunkIsMetadata => "new_chunk_is_metadata",
            Self::NewChunkIsHeader => "new_chunk_is_header",
            Self::OldChunkTooLarge => "old_chunk_too_large",
            Self::DuplicateOldChunk => "duplicate_old_chunk",
            Self::DuplicateNewChunk => "duplicate_new_chunk",
            Self::GarbageAfterEndMarker => "garbage_after_end_marker",
            Self::Other => "other",
        }
    }

    /// How bad a problem of this kind is.
    pub const fn severity(self) -> Severity {
        match self {
            Self::NoStore
            | Self::SnapshotInvalid
            | Self::InvalidFlag
            | Self::GarbageAfterEndMarker => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// The kind of a format-core error.
    pub const fn of(e: &Error) -> Self {
        match e {
            Error::InvalidOrCorrupt { .. } => Self::BadMagic,
            Error::UnsupportedVersion { .. } => Self::BadVersion,
            Error::InvalidOnDiskChunkSize { .. } | Error::InvalidChunkSize { .. } => {
                Self::BadChunkSize
            }
            Error::AreaBeyondDevice { .. } | Error::OnDiskChunkBeyondDevice { .. } => {
                Self::AreaBeyondDevice
            }
            Error::NewChunkBeyondDevice { .. } => Self::NewChunkBeyondDevice,
            Error::NewChunkIsMetadata { .. } => Self::NewChunkIsMetadata,
            Error::NewChunkIsHeader { .. } => Self::NewChunkIsHeader,
            Error::OldChunkTooLarge { .. } => Self::OldChunkTooLarge,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Its kind.
    pub kind: Kind,
    /// The metadata area concerned, if any.
    pub area: Option<u64>,
    /// The index of the record in that area, if any.
    pub index: Option<u32>,
    /// The message: the format core's text where it has one (the module
    /// logs the same).
    pub message: String,
}

impl Problem {
    /// How bad it is.
    pub const fn severity(&self) -> Severity {
        self.kind.severity()
    }

    fn from_error(e: &Error) -> Self {
        let (area, index) = match *e {
            Error::AreaBeyondDevice { area, .. } => (Some(area), None),
            Error::NewChunkBeyondDevice { area, index, .. }
            | Error::NewChunkIsMetadata { area, index, .. }
            | Error::NewChunkIsHeader { area, index }
            | Error::OldChunkTooLarge { area, index, .. } => (Some(area), Some(index)),
            _ => (None, None),
        };
        Self {
            kind: Kind::of(e),
            area,
            index,
            message: e.to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity(), self.message)
    }
}

/// What the module would do with the device at activation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Magic 0: start a new, empty store.
    NewStore,
    /// Load the snapshot as invalid (nothing scanned).
    Invalid,
    /// Load the store; the result of its scan.
    Valid(ScanResult),
    /// The header says the store is valid; its areas were not read (a
    /// header-only check).
    HeaderValid,
    /// Refuse the device with this message.
    Refused(String),
}

/// Options of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Logical block sizes bounding the chunk size.
    pub blocks: BlockSizes,
    /// Whether to look for duplicate chunks (memory grows with the number
    /// of exceptions).
    pub duplicates: bool,
    /// Whether to stop after the header (no area is read).
    pub header_only: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            blocks: BlockSizes::SECTOR,
            duplicates: true,
            header_only: false,
        }
    }
}

/// The outcome of a check that could read what it needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSummary {
    /// The raw header, if the device holds one.
    pub header: Option<DiskHeader>,
    /// Size of the device in bytes.
    pub cow_bytes: u64,
    /// The layout, once the header passed.
    pub layout: Option<Layout>,
    /// Metadata areas read.
    pub areas: u64,
    /// Records before the end marker, good or bad.
    pub exceptions: u64,
    /// Problems of severity error.
    pub errors: u64,
    /// Problems of severity warning.
    pub warnings: u64,
    /// What the module would do.
    pub verdict: Verdict,
}

impl CheckSummary {
    /// Exit status of `snap_check`: 0 clean, 1 problems (warnings count
    /// unless `ignore_warnings`).
    pub fn exit_code(&self, ignore_warnings: bool) -> i32 {
        if self.errors > 0 || (self.warnings > 0 && !ignore_warnings) {
            1
        } else {
            0
        }
    }
}

struct Checker<'r, R> {
    report: &'r mut R,
    summary: CheckSummary,
}

impl<R: FnMut(&Problem)> Checker<'_, R> {
    fn problem(&mut self, p: Problem) {
        match p.severity() {
            Severity::Error => self.summary.errors = self.summary.errors.saturating_add(1),
            Severity::Warning => self.summary.warnings = self.summary.warnings.saturating_add(1),
        }
        (self.report)(&p);
    }

    fn error(&mut self, e: &Error) {
        self.problem(Problem::from_error(e));
    }
}

/// Checks the COW device `io`, calling `report` for each problem as it is
/// found.
///
/// # Errors
///
/// The I/O error if the device cannot be read (`snap_check` exits with 2).
pub fn check<I, R>(
    io: &I,
    opts: &CheckOptions,
    progress: &mut Progress,
    mut report: R,
) -> io::Result<CheckSummary>
where
    I: BlockIo,
    R: FnMut(&Problem),
{
    let mut c = Checker {
        report: &mut report,
        summary: CheckSummary {
            header: None,
            cow_bytes: 0,
            layout: None,
            areas: 0,
            exceptions: 0,
            errors: 0,
            warnings: 0,
            verdict: Verdict::NewStore,
        },
    };
    let info = match read_device_header(io, opts.blocks) {
        Ok(info) => info,
        Err(HeaderError::Io(e)) => return Err(e),
        Err(e) => {
            let kind = match e {
                HeaderError::TooSmall { bytes } => {
                    c.summary.cow_bytes = bytes;
                    Kind::DeviceTooSmall
                }
                _ => Kind::BadMagic,
            };
            let message = e.to_string();
            c.problem(Problem {
                kind,
                area: None,
                index: None,
                message: message.clone(),
            });
            c.summary.verdict = Verdict::Refused(message);
            return Ok(c.summary);
        }
    };
    c.summary.cow_bytes = info.cow_bytes;
    c.summary.header = Some(info.header);
    if info.header.magic == SNAP_MAGIC && info.header.valid > 1 {
        c.problem(Problem {
            kind: Kind::InvalidFlag,
            area: None,
            index: None,
            message: format!(
                "header valid field is {}, neither 0 nor 1: the module treats it as valid",
                info.header.valid
            ),
        });
    }
    match info.decision {
        Err(e) => {
            c.error(&e);
            c.summary.verdict = Verdict::Refused(e.to_string());
        }
        Ok(HeaderDecision::New(_)) => {
            c.problem(Problem {
                kind: Kind::NoStore,
                area: None,
                index: None,
                message: "the device holds no snapshot store (magic 0): the module would start a new, empty one".into(),
            });
            c.summary.verdict = Verdict::NewStore;
        }
        Ok(HeaderDecision::Invalid(layout)) => {
            c.summary.layout = Some(layout);
            c.problem(Problem {
                kind: Kind::SnapshotInvalid,
                area: None,
                index: None,
                message: "the snapshot is marked invalid (valid 0): the module loads it as invalid and reads no exception".into(),
            });
            c.summary.verdict = Verdict::Invalid;
        }
        Ok(HeaderDecision::Valid(layout)) => {
            c.summary.layout = Some(layout);
            if opts.header_only {
                c.summary.verdict = Verdict::HeaderValid;
            } else {
                check_areas(io, layout, info.cow_sectors, opts, progress, &mut c)?;
            }
        }
    }
    Ok(c.summary)
}

/// Calls `f` with every record before an end marker, in the order and
/// with the stops of [`check_areas`], reading the areas into `buf`.
fn each_record<I: BlockIo>(
    io: &I,
    layout: Layout,
    cow_sectors: u64,
    buf: &mut [u8],
    progress: &mut Progress,
    mut f: impl FnMut(u64, u32, Exception),
) -> io::Result<()> {
    let mut scan = Scan::new(layout, cow_sectors);
    let mut areas = 0u64;
    while let Ok(aio) = scan.next_area() {
        read_area(io, layout, &aio, buf)?;
        areas = areas.saturating_add(1);
        progress.update(areas);
        match scan.check_area(buf, |index, e, _| f(aio.area, index, e)) {
            Ok(AreaFill::Full(next)) => scan = next,
            Ok(AreaFill::Partial(_)) | Err(_) => break,
        }
    }
    progress.finish();
    Ok(())
}

/// Reports the origin chunks used more than once, each repeat where it
/// stands, after the pass that fed `filter` with every record: more passes
/// only if some bit of the filter was hit twice, a last one only if a
/// duplicate was found.
fn report_old_chunk_duplicates<I: BlockIo, R: FnMut(&Problem)>(
    io: &I,
    layout: Layout,
    cow_sectors: u64,
    mut filter: OldChunkFilter,
    progress: &mut Progress,
    c: &mut Checker<'_, R>,
) -> io::Result<()> {
    let passes = filter.start_second_passes();
    if passes == 0 {
        return Ok(());
    }
    let len = usize::try_from(layout.chunk_bytes()).map_err(io::Error::other)?;
    let mut buf = vec![0u8; len];
    let areas = Some(layout.device_areas(cow_sectors));
    for pass in 0..passes {
        progress.restart("snap_check: duplicate origin chunks", "areas", areas);
        each_record(io, layout, cow_sectors, &mut buf, progress, |_, _, e| {
            filter.feed_again(pass, e.old_chunk);
        })?;
        filter.end_pass();
    }
    let mut duplicates = filter.finish();
    if duplicates.is_empty() {
        return Ok(());
    }
    progress.restart("snap_check: reporting them", "areas", areas);
    each_record(
        io,
        layout,
        cow_sectors,
        &mut buf,
        progress,
        |area, index, e| {
            if duplicates.is_repeat(e.old_chunk) {
                c.problem(Problem {
                kind: Kind::DuplicateOldChunk,
                area: Some(area),
                index: Some(index),
                message: format!(
                    "exception {index} of area {area}: old_chunk {} is also in an earlier exception",
                    e.old_chunk
                ),
            });
            }
        },
    )
}

fn check_areas<I: BlockIo, R: FnMut(&Problem)>(
    io: &I,
    layout: Layout,
    cow_sectors: u64,
    opts: &CheckOptions,
    progress: &mut Progress,
    c: &mut Checker<'_, R>,
) -> io::Result<()> {
    let len = usize::try_from(layout.chunk_bytes()).map_err(io::Error::other)?;
    let mut buf = vec![0u8; len];
    // The module's scan, told to go on past broken records so that each is
    // reported; the first one is where the module would refuse the store.
    let mut scan = Scan::new(layout, cow_sectors);
    let mut refusal = None;
    // The size the module would ask for, after its refusal.
    let mut advice = None;
    let mut old_chunks = opts
        .duplicates
        .then(|| OldChunkFilter::new(layout.device_chunks(cow_sectors)));
    let mut new_chunks = opts
        .duplicates
        .then(|| NewChunks::new(layout.device_chunks(cow_sectors)));
    progress.restart(
        "snap_check",
        "areas",
        Some(layout.device_areas(cow_sectors)),
    );
    // The scan's result, or the error that stopped the walk (also in
    // `refusal`).
    let end = loop {
        let aio = match scan.next_area() {
            Ok(aio) => aio,
            Err(e) => {
                c.error(&e);
                if refusal.is_none() {
                    advice = scan.cow_too_small(&e, None);
                }
                refusal.get_or_insert(e);
                break Err(e);
            }
        };
        read_area(io, layout, &aio, &mut buf)?;
        // Until the first refusal, the scan before the area, to size the
        // device for a refusal in it ([`Scan::cow_too_small`]).
        let before = refusal.is_none().then(|| scan.clone());
        c.summary.areas = c.summary.areas.saturating_add(1);
        let area = aio.area;
        let checked = scan.check_area(&buf, |index, e, broken| {
            c.summary.exceptions = c.summary.exceptions.saturating_add(1);
            let new_ok = match broken {
                None => true,
                Some(err) => {
                    c.error(&err);
                    refusal.get_or_insert(err);
                    matches!(err, Error::OldChunkTooLarge { .. })
                }
            };
            if opts.duplicates {
                if let Some(filter) = old_chunks.as_mut() {
                    filter.feed(e.old_chunk);
                }
                if new_ok && new_chunks.as_mut().is_some_and(|set| !set.insert(e.new_chunk)) {
                    c.problem(Problem {
                        kind: Kind::DuplicateNewChunk,
                        area: Some(area),
                        index: Some(index),
                        message: format!(
                            "exception {index} of area {area}: new_chunk {} is also in an earlier exception",
                            e.new_chunk
                        ),
                    });
                }
            }
        });
        progress.update(c.summary.areas);
        if let (Some(before), Some(e)) = (before, refusal.as_ref()) {
            advice = before.cow_too_small(e, Some(&buf));
        }
        match checked {
            Ok(AreaFill::Full(next)) => scan = next,
            Ok(AreaFill::Partial(result)) => break Ok(result),
            Err(Stopped { stop: e, .. }) => {
                c.error(&e);
                refusal.get_or_insert(e);
                break Err(e);
            }
        }
    };
    progress.finish();
    if let Some(w @ Warning::GarbageAfterEndMarker { area, first, .. }) =
        end.ok().and_then(|r| r.warning)
    {
        c.problem(Problem {
            kind: Kind::GarbageAfterEndMarker,
            area: Some(area),
            index: Some(first),
            message: w.to_string(),
        });
    }
    if let Some(filter) = old_chunks {
        report_old_chunk_duplicates(io, layout, cow_sectors, filter, progress, c)?;
    }
    c.summary.verdict = match (refusal, end) {
        (None, Ok(r)) => Verdict::Valid(r),
        (Some(e), _) | (None, Err(e)) => Verdict::Refused(match advice {
            Some(a) => format!("{e}; {a}"),
            None => e.to_string(),
        }),
    };
    Ok(())
}
