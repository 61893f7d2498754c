// SPDX-License-Identifier: GPL-2.0-only

//! `snap_dump --repair`: a dump of every exception that can be salvaged
//! from a damaged store, for `snap_restore` to write back as a store the
//! module loads.
//!
//! The walk reads the areas as the activation scan does and applies its
//! rules ([`Layout::check_exception`]) to each record, but a record that
//! breaks one is dropped instead of refusing the store:
//!
//! - a record breaking a rule of the scan (`new_chunk` past the device end
//!   or on a metadata chunk, `old_chunk` too large);
//! - a record whose `new_chunk` an earlier kept record claims (the first
//!   claim wins; [`NewChunks`]);
//! - every mapping of an origin chunk but the last, the newest commit
//!   ([`OldChunkFilter`], with more passes over the areas only when two
//!   origin chunks may be equal). Which one dm-snapshot would use depends
//!   on the order in its hash table's slot, which depends on the table's
//!   size: the module cannot be followed here;
//! - records after the end marker, which the module ignores;
//! - when the kept records exactly fill their last area and the area after
//!   it lies beyond the device, the last one, since the end marker needs
//!   that room.
//!
//! The rules apply in that order: a record that lost its COW chunk to an
//! earlier one stays dropped even if the earlier one is then dropped for
//! its origin chunk (records `5/10`, `5/11`, `7/10` keep only `5/11`). A
//! damaged store is ambiguous either way; this order settles the COW
//! chunks in the first pass.
//!
//! Every pass over the areas must read what the first read (a digest of
//! each step is compared): a device that changes, or a read that fails
//! only once, ends the repair with [`RepairError::Changed`] and a dump
//! without its closing element, which `snap_restore` refuses.
//!
//! The store ends at the first end marker, as for the module. Going on past
//! it ([`RepairOptions::past_end_marker`]) takes the records of the later
//! areas too, for a store whose area was zeroed or torn; it is an explicit
//! choice because the areas of an older, longer store on the same device
//! look exactly like real ones. An unreadable area ends the walk, or is
//! skipped when going past the end marker. A header marked invalid (the
//! snapshot lost data when it overflowed or failed) is salvaged only with
//! [`RepairOptions::salvage_invalid`].
//!
//! Memory holds one chunk and the duplicate finders' bitmaps
//! ([`crate::duplicates`]), whatever the size of the store. The input is
//! only read.
//!
//! C source: `read_exceptions()` in [drivers/md/dm-snap-persistent.c](srctree/drivers/md/dm-snap-persistent.c)

use std::fmt;
use std::io;
use std::io::Write;

use snap_format::read_exception;
use snap_format::BlockSizes;
use snap_format::Exception;
use snap_format::HeaderDecision;
use snap_format::Layout;

use crate::dump::read_area;
use crate::duplicates::NewChunks;
use crate::duplicates::OldChunkFilter;
use crate::header::read_device_header;
use crate::header::HeaderError;
use crate::io::BlockIo;
use crate::progress::Progress;
use crate::xml;
use crate::xml::DumpHeader;

/// Options of a repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairOptions {
    /// Logical block sizes bounding the chunk size.
    pub blocks: BlockSizes,
    /// Salvage the exceptions of a snapshot whose header marks it invalid.
    pub salvage_invalid: bool,
    /// Go on past the first end marker and past unreadable areas, to the
    /// last area of the device.
    pub past_end_marker: bool,
}

impl Default for RepairOptions {
    fn default() -> Self {
        Self {
            blocks: BlockSizes::SECTOR,
            salvage_invalid: false,
            past_end_marker: false,
        }
    }
}

/// Why a record was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// It breaks a rule of the activation scan.
    Rule(snap_format::Error),
    /// An earlier record kept claims its COW chunk.
    NewChunkTaken,
    /// A later record maps the same origin chunk.
    OldChunkRemapped,
    /// It lies after the end marker of the store.
    AfterEndMarker,
    /// It is the last of records that fill their area exactly, and the
    /// next area, which must hold the end marker, lies beyond the device.
    NoRoomForEndMarker,
}

impl DropReason {
    /// A short name of the reason, for the summary.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Rule(_) => "breaks a rule",
            Self::NewChunkTaken => "COW chunk claimed twice",
            Self::OldChunkRemapped => "origin chunk mapped again later",
            Self::AfterEndMarker => "after the end marker",
            Self::NoRoomForEndMarker => "no room for the end marker",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rule(e) => write!(f, "{e}"),
            Self::NewChunkTaken => f.write_str("its COW chunk belongs to an earlier record"),
            Self::OldChunkRemapped => {
                f.write_str("a later record maps the same origin chunk (the last mapping is kept)")
            }
            Self::AfterEndMarker => {
                f.write_str("it lies at or after the end marker (the module ignores it)")
            }
            Self::NoRoomForEndMarker => f.write_str(
                "it fills its area, and the next area, which must hold the end marker, \
                 lies beyond the device end",
            ),
        }
    }
}

/// What the repair found on its way, reported as it goes.
#[derive(Debug)]
pub enum Note {
    /// A record dropped.
    Dropped {
        /// Its area.
        area: u64,
        /// Its index in the area.
        index: u32,
        /// The record.
        exception: Exception,
        /// Why.
        reason: DropReason,
    },
    /// The first end marker: the end of the store for the module.
    EndMarker {
        /// Its area.
        area: u64,
        /// Its index in the area.
        index: u32,
    },
    /// An area could not be read.
    Unreadable {
        /// The area.
        area: u64,
        /// Its chunk.
        chunk: u64,
        /// The error.
        error: io::Error,
    },
    /// The area after a full one lies beyond the device: the walk ends.
    AreaBeyondDevice {
        /// The area.
        area: u64,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dropped {
                area,
                index,
                exception,
                reason,
            } => write!(
                f,
                "dropped area {area} record {index} (old_chunk {}, new_chunk {}): {reason}",
                exception.old_chunk, exception.new_chunk
            ),
            Self::EndMarker { area, index } => {
                write!(
                    f,
                    "the store ends at area {area} record {index} (end marker)"
                )
            }
            Self::Unreadable { area, chunk, error } => {
                write!(f, "area {area} (chunk {chunk}) could not be read: {error}")
            }
            Self::AreaBeyondDevice { area } => write!(
                f,
                "area {area} lies beyond the device end: no record can follow"
            ),
        }
    }
}

/// Why a repair could not write a dump.
#[derive(Debug)]
pub enum RepairError {
    /// The header could not be read.
    Header(HeaderError),
    /// The header cannot be used (bad magic, version or chunk size):
    /// without its chunk size no area can be found.
    Unusable(snap_format::Error),
    /// The device holds no store (magic 0).
    NoStore,
    /// The header marks the snapshot invalid and
    /// [`RepairOptions::salvage_invalid`] is not set.
    Invalid,
    /// Writing the dump failed.
    Output(io::Error),
    /// A pass over the areas read other records than the first (the
    /// device changed, or a read failed in one pass only).
    Changed,
}

impl RepairError {
    /// Exit status of `snap_dump --repair` for this error: 2 when the
    /// device or the output could not be read or written, 1 when nothing
    /// can be salvaged.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Header(HeaderError::Io(_)) | Self::Output(_) | Self::Changed => 2,
            Self::Header(HeaderError::TooSmall { .. } | HeaderError::LooksLikeXml)
            | Self::Unusable(_)
            | Self::NoStore
            | Self::Invalid => 1,
        }
    }
}

impl fmt::Display for RepairError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(e) => write!(f, "{e}"),
            Self::Unusable(e) => write!(
                f,
                "{e}; without the header's chunk size no metadata area can be found, \
                 nothing can be salvaged"
            ),
            Self::NoStore => {
                f.write_str("the device holds no snapshot store (magic 0): nothing to salvage")
            }
            Self::Invalid => f.write_str(
                "the snapshot is marked invalid: it lost data when it overflowed or failed, \
                 and the module reads none of its exceptions; --salvage-invalid salvages \
                 them anyway",
            ),
            Self::Output(e) => write!(f, "writing the dump failed: {e}"),
            Self::Changed => f.write_str(
                "the passes over the metadata read different records (the device changed, \
                 or a read failed only once): repair it while nothing else uses it",
            ),
        }
    }
}

impl std::error::Error for RepairError {}

impl From<HeaderError> for RepairError {
    fn from(e: HeaderError) -> Self {
        Self::Header(e)
    }
}

/// What a repair wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairSummary {
    /// The dump's header (`valid` set).
    pub header: Option<DumpHeader>,
    /// Exceptions written to the dump.
    pub kept: u64,
    /// Records dropped, by reason ([`DropReason::name`]), in the order the
    /// reasons were first met.
    pub dropped: Vec<(&'static str, u64)>,
    /// Metadata areas read (in the first pass).
    pub areas: u64,
    /// Whether the header marked the snapshot invalid.
    pub was_invalid: bool,
}

impl RepairSummary {
    /// Records dropped, all reasons.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    fn count_drop(&mut self, reason: &DropReason) {
        let name = reason.name();
        match self.dropped.iter_mut().find(|(n, _)| *n == name) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => self.dropped.push((name, 1)),
        }
    }
}

/// One step of a walk over the areas.
enum Step {
    /// A record that passes the rules and claims a COW chunk first, with
    /// its area and index.
    Kept(u64, u32, Exception),
    /// Something to report (the first pass reports them).
    Note(Note),
    /// An area was read.
    Area,
}

/// One walk over the areas with the salvage rules, the same in every pass.
struct Walk<'a, I> {
    io: &'a I,
    layout: Layout,
    cow_sectors: u64,
    past_end_marker: bool,
}

impl<I: BlockIo> Walk<'_, I> {
    /// One walk, handing each step to `step`; returns a digest of all the
    /// steps, so that the caller can tell that every pass saw the same.
    fn run<F: FnMut(Step) -> Result<(), RepairError>>(
        &self,
        buf: &mut [u8],
        mut step: F,
    ) -> Result<u64, RepairError> {
        let mut digest = 0u64;
        let mut step = |s: Step| {
            let (a, b, c) = match &s {
                Step::Kept(area, index, e) => {
                    (area ^ u64::from(*index) << 40, e.old_chunk, e.new_chunk)
                }
                Step::Note(Note::Dropped {
                    area,
                    index,
                    exception,
                    ..
                }) => (
                    !(area ^ u64::from(*index) << 40),
                    exception.old_chunk,
                    exception.new_chunk,
                ),
                Step::Note(Note::EndMarker { area, index }) => (1, *area, u64::from(*index)),
                Step::Note(Note::Unreadable { area, .. }) => (2, *area, 0),
                Step::Note(Note::AreaBeyondDevice { area }) => (3, *area, 0),
                Step::Area => (4, 0, 0),
            };
            for v in [a, b, c] {
                digest = (digest ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(17);
            }
            step(s)
        };
        self.walk(buf, &mut step)?;
        Ok(digest)
    }

    fn walk<F: FnMut(Step) -> Result<(), RepairError>>(
        &self,
        buf: &mut [u8],
        step: &mut F,
    ) -> Result<(), RepairError> {
        let layout = self.layout;
        let cow_chunks = layout.device_chunks(self.cow_sectors);
        let epa = layout.exceptions_per_area();
        let mut new_chunks = NewChunks::new(cow_chunks);
        let mut ended = false;
        let mut area = 0u64;
        loop {
            let Some(aio) = layout.area_io(area).filter(|a| a.chunk < cow_chunks) else {
                if !ended {
                    step(Step::Note(Note::AreaBeyondDevice { area }))?;
                }
                return Ok(());
            };
            if let Err(error) = read_area(self.io, layout, &aio, buf) {
                step(Step::Note(Note::Unreadable {
                    area,
                    chunk: aio.chunk,
                    error,
                }))?;
                if !self.past_end_marker {
                    return Ok(());
                }
                area = area.saturating_add(1);
                continue;
            }
            step(Step::Area)?;
            for index in 0..epa {
                let Some(e) = read_exception(buf, index) else {
                    break;
                };
                if e.is_end_marker() && !ended {
                    ended = true;
                    step(Step::Note(Note::EndMarker { area, index }))?;
                    if e == Exception::default() {
                        continue;
                    }
                }
                if e == Exception::default() && self.past_end_marker {
                    continue;
                }
                let reason = if ended && !self.past_end_marker {
                    if e == Exception::default() {
                        continue;
                    }
                    Some(DropReason::AfterEndMarker)
                } else if let Err(rule) = layout.check_exception(area, index, e, Some(cow_chunks)) {
                    Some(DropReason::Rule(rule))
                } else if !new_chunks.insert(e.new_chunk) {
                    Some(DropReason::NewChunkTaken)
                } else {
                    None
                };
                step(match reason {
                    None => Step::Kept(area, index, e),
                    Some(reason) => Step::Note(Note::Dropped {
                        area,
                        index,
                        exception: e,
                        reason,
                    }),
                })?;
            }
            if ended && !self.past_end_marker {
                return Ok(());
            }
            area = area.saturating_add(1);
        }
    }
}

/// Writes to `out` a dump of every exception that can be salvaged from the
/// store on `io`, calling `report` with what it finds on the way (each
/// dropped record with its reason). The output is not flushed; nothing is
/// written to `io`.
///
/// # Errors
///
/// See [`RepairError`]. An area that cannot be read is not an error: it is
/// reported, and ends the walk (or is skipped, see
/// [`RepairOptions::past_end_marker`]).
pub fn repair<I, W, R>(
    io: &I,
    opts: &RepairOptions,
    out: &mut W,
    progress: &mut Progress,
    mut report: R,
) -> Result<RepairSummary, RepairError>
where
    I: BlockIo,
    W: Write,
    R: FnMut(&Note),
{
    let info = read_device_header(io, opts.blocks)?;
    let decision = info.decision.map_err(RepairError::Unusable)?;
    let (layout, was_invalid) = match decision {
        HeaderDecision::New(_) => return Err(RepairError::NoStore),
        HeaderDecision::Invalid(_) if !opts.salvage_invalid => return Err(RepairError::Invalid),
        HeaderDecision::Invalid(l) => (l, true),
        HeaderDecision::Valid(l) => (l, false),
    };
    let walk = Walk {
        io,
        layout,
        cow_sectors: info.cow_sectors,
        past_end_marker: opts.past_end_marker,
    };
    let len = usize::try_from(layout.chunk_bytes())
        .map_err(|_| RepairError::Unusable(snap_format::Error::Overflow))?;
    let mut buf = vec![0u8; len];
    let mut summary = RepairSummary {
        was_invalid,
        ..RepairSummary::default()
    };

    // First pass: report, count, and look for origin chunks mapped twice.
    let mut filter = OldChunkFilter::new(layout.device_chunks(info.cow_sectors));
    let mut kept = 0u64;
    progress.restart(
        "snap_dump",
        "areas",
        Some(layout.device_areas(info.cow_sectors)),
    );
    let first = walk.run(&mut buf, |s| {
        match s {
            Step::Kept(_, _, e) => {
                kept = kept.saturating_add(1);
                filter.feed(e.old_chunk);
            }
            Step::Note(n) => {
                if let Note::Dropped { reason, .. } = &n {
                    summary.count_drop(reason);
                }
                report(&n);
            }
            Step::Area => {
                summary.areas = summary.areas.saturating_add(1);
                progress.update(summary.areas);
            }
        }
        Ok(())
    })?;
    progress.finish();
    // Every later pass must see what the first saw: what it decided
    // (the records kept, the origin chunks mapped twice) rests on it.
    let same = |digest: u64| {
        if digest == first {
            Ok(())
        } else {
            Err(RepairError::Changed)
        }
    };
    for pass in 0..filter.start_second_passes() {
        same(walk.run(&mut buf, |s| {
            if let Step::Kept(_, _, e) = s {
                filter.feed_again(pass, e.old_chunk);
            }
            Ok(())
        })?)?;
        filter.end_pass();
    }
    let mut remapped = filter.finish();
    if !remapped.is_empty() {
        same(walk.run(&mut buf, |s| {
            if let Step::Kept(_, _, e) = s {
                remapped.count(e.old_chunk);
            }
            Ok(())
        })?)?;
    }
    let superseded = remapped.superseded();

    // The records that will be written fill areas from the first on; the
    // end marker needs room after the last.
    let total = kept.saturating_sub(superseded);
    let epa = u64::from(layout.exceptions_per_area());
    let cow_chunks = layout.device_chunks(info.cow_sectors);
    let no_room = total > 0
        && total.checked_rem(epa) == Some(0)
        && layout
            .area_io(total / epa)
            .is_none_or(|a| a.chunk >= cow_chunks);

    // Last pass: write the dump.
    let header = DumpHeader {
        disk_version: info.header.version,
        valid: 1,
        chunk_size: layout.chunk_sectors(),
        cow_sectors: info.cow_sectors,
    };
    xml::write_header(out, &header).map_err(RepairError::Output)?;
    let mut written = 0u64;
    let last = walk.run(&mut buf, |s| {
        let Step::Kept(area, index, e) = s else {
            return Ok(());
        };
        let reason = if remapped.is_superseded(e.old_chunk) {
            Some(DropReason::OldChunkRemapped)
        } else if no_room && written.saturating_add(1) == total {
            Some(DropReason::NoRoomForEndMarker)
        } else {
            None
        };
        match reason {
            Some(reason) => {
                summary.count_drop(&reason);
                report(&Note::Dropped {
                    area,
                    index,
                    exception: e,
                    reason,
                });
            }
            None => {
                xml::write_exception(out, e).map_err(RepairError::Output)?;
                written = written.saturating_add(1);
            }
        }
        Ok(())
    })?;
    // A dump of other records than were counted is not closed, so that
    // snap_restore refuses it.
    same(last)?;
    xml::write_footer(out).map_err(RepairError::Output)?;
    summary.kept = written;
    summary.header = Some(header);
    Ok(summary)
}
