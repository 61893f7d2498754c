// SPDX-License-Identifier: GPL-2.0-only

//! `snap_restore`: writes a COW device from a dump ([`crate::xml`]).
//!
//! The dump is read twice and nothing is written until the first pass has
//! validated all of it: the header with the chunk-size rules and the
//! version check of the module's header decision, each exception with
//! [`Layout::check_exception`], each area (as it will be on disk) with the
//! module's own [`Scan`] (so an area that would not fit on the target is
//! refused), and duplicate chunks ([`crate::duplicates`]: COW chunks at
//! once, origin chunks with more passes over the dump only when its hashed
//! bitmap says two may be equal). The second pass
//! writes what the module would have written: every area with its
//! exceptions (one write per area) and, after the last exception, a zeroed
//! end marker in the same area or, when the last area is exactly full, the
//! next area zeroed. Data chunks are not written: a new image file is
//! sparse.
//!
//! Order of writes: the header chunk is zeroed first (so that a restore
//! cut short leaves no valid store behind), then the areas, then a flush,
//! then the header, then a flush.
//!
//! C source: `persistent_commit_exception()`, `write_header()` in [drivers/md/dm-snap-persistent.c](srctree/drivers/md/dm-snap-persistent.c)

use std::fmt;
use std::io;
use std::io::BufRead;

use snap_format::write_exception;
use snap_format::AreaFill;
use snap_format::AreaIo;
use snap_format::BlockSizes;
use snap_format::ChunkSize;
use snap_format::DiskHeader;
use snap_format::Error;
use snap_format::Layout;
use snap_format::Scan;
use snap_format::Stopped;
use snap_format::DISK_HEADER_SIZE;
use snap_format::MAX_DEVICE_SECTORS;
use snap_format::SECTOR_SIZE;
use snap_format::SNAPSHOT_DISK_VERSION;
use snap_format::SNAP_MAGIC;

use crate::duplicates::NewChunks;
use crate::duplicates::OldChunkFilter;
use crate::header::holds_valid_store;
use crate::io::BlockIo;
use crate::progress::Progress;
use crate::xml::DumpHeader;
use crate::xml::DumpReader;
use crate::xml::ParseError;

/// The most memory one extra pass over the dump collects origin chunks
/// into, 64 MiB: four times the check's bound, because each pass here
/// parses the whole dump again (a second of a 10-million-exception dump)
/// where the check's passes reread only the metadata areas. Ten million
/// origin chunks leave about 4.5 million candidates in the hashed bitmap:
/// one pass instead of three.
const PASS_BYTES: u64 = 64 << 20;

/// Options of a restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Logical block sizes bounding the chunk size.
    pub blocks: BlockSizes,
    /// Overwrite a target that holds a valid store.
    pub force: bool,
    /// Size in sectors for an empty image file (instead of the dump's
    /// `cow_sectors`), or a larger size for an existing one; a smaller one
    /// is an error (a target is never shrunk). A block device keeps its
    /// size; giving one that differs is an error.
    pub size_sectors: Option<u64>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            blocks: BlockSizes::SECTOR,
            force: false,
            size_sectors: None,
        }
    }
}

/// Why a restore failed.
#[derive(Debug)]
pub enum RestoreError {
    /// The dump could not be read or parsed.
    Parse(ParseError),
    /// The dump is well formed but describes a store the module would
    /// refuse (or with duplicate chunks).
    Dump {
        /// Line of the dump at fault.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The target holds a valid store and `force` was not given.
    TargetHoldsStore {
        /// The chunk size in its header.
        chunk_size: u32,
    },
    /// A size was given for a target whose size cannot change.
    SizeMismatch {
        /// The size asked for, in sectors.
        asked: u64,
        /// The target's size, in sectors.
        actual: u64,
    },
    /// A size below its own was given for an existing image file:
    /// `snap_restore` never shrinks a target.
    WouldShrink {
        /// The size asked for, in sectors.
        asked: u64,
        /// The target's size, in sectors.
        actual: u64,
    },
    /// Reading, resizing or writing the target failed.
    Target(io::Error),
    /// The dump read differently the second time.
    Changed,
    /// The module's scan read an area built from the dump otherwise than
    /// it was built (ending the store in a full area, going on after the
    /// last one, or with another count of exceptions): the dump is refused
    /// there, as one the module would not load as it reads.
    ScanMismatch {
        /// Line of the dump at fault.
        line: u64,
    },
}

impl RestoreError {
    /// Exit status of `snap_restore`: 2 when the dump or the target could
    /// not be read or written, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Parse(ParseError::Io(_)) | Self::Target(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse(e) => write!(f, "{e}"),
            Self::Dump { line, message } => write!(f, "line {line}: {message}"),
            Self::TargetHoldsStore { chunk_size } => write!(
                f,
                "the target holds a valid snapshot store (chunk size {chunk_size}): not overwriting it without --force"
            ),
            Self::SizeMismatch { asked, actual } => write!(
                f,
                "the target's size cannot change: it has {actual} sectors, {asked} were asked for"
            ),
            Self::WouldShrink { asked, actual } => write!(
                f,
                "the target has {actual} sectors: {asked} would cut it, and snap_restore never shrinks a target"
            ),
            Self::Target(e) => write!(f, "target: {e}"),
            Self::Changed => f.write_str(
                "the dump changed between the validating and the writing pass; the target is not a valid store",
            ),
            Self::ScanMismatch { line } => write!(
                f,
                "line {line}: the module's scan reads the areas built from the dump otherwise than they were built"
            ),
        }
    }
}

impl std::error::Error for RestoreError {}

impl From<ParseError> for RestoreError {
    fn from(e: ParseError) -> Self {
        Self::Parse(e)
    }
}

/// What a restore wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreSummary {
    /// The dump's header.
    pub header: DumpHeader,
    /// Size of the COW device written, in sectors (the dump's
    /// `cow_sectors` unless a size was given or the target is a block
    /// device).
    pub cow_sectors: u64,
    /// Exceptions written.
    pub exceptions: u64,
    /// Metadata areas written.
    pub areas: u64,
}

/// Counts and a digest of the exceptions of one pass, to notice a dump
/// that changed between the passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct PassStats {
    exceptions: u64,
    areas: u64,
    digest: u64,
}

/// Checks the dump's header against the chunk-size rules and the version
/// check of the module's header decision; returns the layout.
fn header_layout(h: &DumpHeader, blocks: BlockSizes, line: u64) -> Result<Layout, RestoreError> {
    let chunk_size = ChunkSize::new(h.chunk_size, blocks).map_err(|reason| RestoreError::Dump {
        line,
        message: Error::InvalidOnDiskChunkSize {
            chunk_size: h.chunk_size,
            reason,
        }
        .to_string(),
    })?;
    if h.disk_version != SNAPSHOT_DISK_VERSION {
        let header = DiskHeader {
            magic: SNAP_MAGIC,
            valid: h.valid,
            version: h.disk_version,
            chunk_size: h.chunk_size,
        };
        return Err(RestoreError::Dump {
            line,
            message: Error::UnsupportedVersion {
                version: header.version_as_int(),
            }
            .to_string(),
        });
    }
    if h.cow_sectors > MAX_DEVICE_SECTORS {
        return Err(RestoreError::Dump {
            line,
            message: format!(
                "cow_sectors=\"{}\" is larger than any block device ({MAX_DEVICE_SECTORS} sectors)",
                h.cow_sectors
            ),
        });
    }
    Ok(Layout::new(chunk_size))
}

/// Restores the dump that `open_input` opens (it is called twice, once per
/// pass) onto `target`.
///
/// # Errors
///
/// See [`RestoreError`]. Nothing is written unless the whole dump passed
/// validation and the target may be overwritten.
pub fn restore<I, F, R>(
    mut open_input: F,
    target: &mut I,
    opts: &RestoreOptions,
    progress: &mut Progress,
) -> Result<RestoreSummary, RestoreError>
where
    I: BlockIo,
    F: FnMut() -> io::Result<R>,
    R: BufRead,
{
    let mut reader = DumpReader::new(open_input().map_err(ParseError::Io)?);
    let header = reader.read_header()?;
    let layout = header_layout(&header, opts.blocks, reader.line())?;

    let target_bytes = target.size().map_err(RestoreError::Target)?;
    if target_bytes >= u64::try_from(DISK_HEADER_SIZE).unwrap_or(u64::MAX) {
        let mut buf = [0u8; DISK_HEADER_SIZE];
        target.read_at(0, &mut buf).map_err(RestoreError::Target)?;
        let old = DiskHeader::decode(&buf)
            .map_err(|e| RestoreError::Target(io::Error::other(e.to_string())))?;
        if holds_valid_store(&old) && !opts.force {
            return Err(RestoreError::TargetHoldsStore {
                chunk_size: old.chunk_size,
            });
        }
    }
    let sector = u64::from(SECTOR_SIZE);
    // An empty image file (one this run created) gets the dump's size or
    // the one asked for. Any other target keeps its size: an image file
    // grows only when a larger size is asked for, and never shrinks.
    let actual = target_bytes / sector;
    let cow_sectors = match opts.size_sectors {
        _ if target.resizable() && target_bytes == 0 => {
            opts.size_sectors.unwrap_or(header.cow_sectors)
        }
        None => actual,
        Some(asked) if asked == actual => actual,
        Some(asked) if !target.resizable() => {
            return Err(RestoreError::SizeMismatch { asked, actual });
        }
        Some(asked) if asked < actual => {
            return Err(RestoreError::WouldShrink { asked, actual });
        }
        Some(asked) => asked,
    };

    progress.restart("snap_restore: validating", "exceptions", None);
    let mut old_chunks =
        OldChunkFilter::with_pass_bytes(layout.device_chunks(cow_sectors), PASS_BYTES);
    let first = walk(
        &mut reader,
        layout,
        cow_sectors,
        header.valid != 0,
        Some(&mut old_chunks),
        progress,
        |_, _| Ok(()),
    )?;
    refuse_repeated_old_chunks(&mut open_input, old_chunks, progress)?;

    // Validated: now write.
    let bytes = cow_sectors.checked_mul(sector).ok_or_else(|| {
        RestoreError::Target(io::Error::new(
            io::ErrorKind::InvalidInput,
            "size overflows",
        ))
    })?;
    if bytes > target_bytes {
        target.set_size(bytes).map_err(RestoreError::Target)?;
    }
    let chunk_len = usize::try_from(layout.chunk_bytes())
        .map_err(|_| RestoreError::Target(io::ErrorKind::OutOfMemory.into()))?;
    let mut header_chunk = vec![0u8; chunk_len];
    target
        .write_at(0, &header_chunk)
        .map_err(RestoreError::Target)?;
    target.sync().map_err(RestoreError::Target)?;

    let mut reader = DumpReader::new(open_input().map_err(ParseError::Io)?);
    if reader.read_header()? != header {
        return Err(RestoreError::Changed);
    }
    progress.restart("snap_restore: writing", "areas", Some(first.areas));
    let second = walk(
        &mut reader,
        layout,
        cow_sectors,
        header.valid != 0,
        None,
        progress,
        |aio, buf| {
            let offset = aio
                .sector
                .checked_mul(sector)
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            target.write_at(offset, buf)
        },
    )?;
    if second != first {
        return Err(RestoreError::Changed);
    }
    target.sync().map_err(RestoreError::Target)?;

    let disk = DiskHeader {
        magic: SNAP_MAGIC,
        valid: header.valid,
        version: header.disk_version,
        chunk_size: header.chunk_size,
    };
    disk.encode(&mut header_chunk)
        .map_err(|e| RestoreError::Target(io::Error::other(e.to_string())))?;
    target
        .write_at(0, &header_chunk)
        .map_err(RestoreError::Target)?;
    target.sync().map_err(RestoreError::Target)?;
    progress.finish();
    Ok(RestoreSummary {
        header,
        cow_sectors,
        exceptions: second.exceptions,
        areas: second.areas,
    })
}

/// One area being built.
struct AreaBuilder {
    buf: Vec<u8>,
    /// Dump line of each record in `buf`.
    lines: Vec<u64>,
    filled: u32,
}

impl AreaBuilder {
    fn line_of(&self, index: u32) -> Option<u64> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.lines.get(i))
            .copied()
    }
}

fn dump_error(line: u64, e: &Error) -> RestoreError {
    RestoreError::Dump {
        line,
        message: e.to_string(),
    }
}

/// Validates one built area with the module's scan, which must find it
/// full (`last` false: its scan of the next area comes back) or ending the
/// store after its `filled` exceptions (`last`: its result comes back), and
/// hands it to `sink`.
fn finish_area<S>(
    area: &mut AreaBuilder,
    scan: Scan,
    last: bool,
    line: u64,
    sink: &mut S,
) -> Result<AreaFill, RestoreError>
where
    S: FnMut(&AreaIo, &[u8]) -> io::Result<()>,
{
    let first_line = area.line_of(0).filter(|_| area.filled > 0).unwrap_or(line);
    let aio = scan.next_area().map_err(|e| RestoreError::Dump {
        line: first_line,
        message: format!("{e}: the dump needs a larger COW device"),
    })?;
    let fill = scan
        .validate_area(&area.buf)
        .map_err(|Stopped { stop: e, .. }| {
            let at = match e {
                Error::NewChunkBeyondDevice { index, .. }
                | Error::NewChunkIsMetadata { index, .. }
                | Error::NewChunkIsHeader { index, .. }
                | Error::OldChunkTooLarge { index, .. } => area.line_of(index),
                _ => None,
            };
            dump_error(at.unwrap_or(first_line), &e)
        })?;
    let expected = match &fill {
        AreaFill::Full(_) => !last,
        AreaFill::Partial(result) => last && result.current_committed == area.filled,
    };
    if !expected {
        return Err(RestoreError::ScanMismatch { line: first_line });
    }
    sink(&aio, &area.buf).map_err(RestoreError::Target)?;
    area.buf.fill(0);
    area.filled = 0;
    Ok(fill)
}

/// Reads the dump again as often as `filter` needs to tell the origin
/// chunks used twice (none, for most dumps: see [`OldChunkFilter`]), and
/// refuses the dump at the line of the first repeat.
fn refuse_repeated_old_chunks<F, R>(
    open_input: &mut F,
    mut filter: OldChunkFilter,
    progress: &mut Progress,
) -> Result<(), RestoreError>
where
    F: FnMut() -> io::Result<R>,
    R: BufRead,
{
    let reopen = |open_input: &mut F| -> Result<DumpReader<R>, RestoreError> {
        let mut reader = DumpReader::new(open_input().map_err(ParseError::Io)?);
        reader.read_header()?;
        Ok(reader)
    };
    for pass in 0..filter.start_second_passes() {
        progress.restart("snap_restore: duplicate origin chunks", "exceptions", None);
        let mut reader = reopen(open_input)?;
        while let Some(e) = reader.next_exception()? {
            filter.feed_again(pass, e.old_chunk);
        }
        filter.end_pass();
    }
    let mut repeats = filter.finish();
    if repeats.is_empty() {
        return Ok(());
    }
    let mut reader = reopen(open_input)?;
    while let Some(e) = reader.next_exception()? {
        if repeats.is_repeat(e.old_chunk) {
            return Err(RestoreError::Dump {
                line: reader.line(),
                message: format!("old_chunk {} is also in an earlier exception", e.old_chunk),
            });
        }
    }
    Err(RestoreError::Changed)
}

/// Reads the exceptions of the dump after its header, builds each area as
/// it will be on disk, validates it and hands it to `sink`.
fn walk<R, S>(
    reader: &mut DumpReader<R>,
    layout: Layout,
    cow_sectors: u64,
    valid: bool,
    mut old_chunks: Option<&mut OldChunkFilter>,
    progress: &mut Progress,
    mut sink: S,
) -> Result<PassStats, RestoreError>
where
    R: BufRead,
    S: FnMut(&AreaIo, &[u8]) -> io::Result<()>,
{
    let epa = layout.exceptions_per_area();
    let cow_chunks = layout.device_chunks(cow_sectors);
    let len = usize::try_from(layout.chunk_bytes())
        .map_err(|_| RestoreError::Target(io::ErrorKind::OutOfMemory.into()))?;
    let mut area = AreaBuilder {
        buf: vec![0u8; len],
        lines: vec![0u64; usize::try_from(epa).unwrap_or(0)],
        filled: 0,
    };
    let mut scan = Scan::new(layout, cow_sectors);
    let duplicates = old_chunks.is_some();
    let mut new_chunks = NewChunks::new(cow_chunks);
    let mut stats = PassStats::default();
    while let Some(e) = reader.next_exception()? {
        let line = reader.line();
        if !valid {
            return Err(RestoreError::Dump {
                line,
                message: "an invalid store (valid=\"0\") has no exceptions".into(),
            });
        }
        layout
            .check_exception(stats.areas, area.filled, e, Some(cow_chunks))
            .map_err(|err| dump_error(line, &err))?;
        if let Some(filter) = old_chunks.as_deref_mut() {
            filter.feed(e.old_chunk);
            if !new_chunks.insert(e.new_chunk) {
                return Err(RestoreError::Dump {
                    line,
                    message: format!("new_chunk {} is also in an earlier exception", e.new_chunk),
                });
            }
        }
        write_exception(&mut area.buf, area.filled, e)
            .ok_or_else(|| dump_error(line, &Error::Overflow))?;
        if let Some(slot) = usize::try_from(area.filled)
            .ok()
            .and_then(|i| area.lines.get_mut(i))
        {
            *slot = line;
        }
        area.filled = area.filled.saturating_add(1);
        stats.exceptions = stats.exceptions.saturating_add(1);
        stats.digest = (stats.digest ^ e.old_chunk)
            .wrapping_mul(0x0100_0000_01b3)
            .rotate_left(17)
            ^ e.new_chunk;
        if area.filled == epa {
            scan = match finish_area(&mut area, scan, false, line, &mut sink)? {
                AreaFill::Full(next) => next,
                AreaFill::Partial(_) => return Err(RestoreError::ScanMismatch { line }),
            };
            stats.areas = stats.areas.saturating_add(1);
            progress.update(if duplicates {
                stats.exceptions
            } else {
                stats.areas
            });
        }
    }
    // The last area: partial, possibly empty (its zeroed record at
    // `filled` is the end marker).
    match finish_area(&mut area, scan, true, reader.line(), &mut sink)? {
        AreaFill::Partial(result) if result.exceptions == stats.exceptions => {}
        _ => {
            return Err(RestoreError::ScanMismatch {
                line: reader.line(),
            })
        }
    }
    stats.areas = stats.areas.saturating_add(1);
    Ok(stats)
}
