// SPDX-License-Identifier: GPL-2.0-only

//! `snap_dump`: the header and exceptions of a COW device as a dump
//! ([`crate::xml`]), streaming: memory holds one chunk, whatever the size
//! of the store.
//!
//! The exceptions are read with the format core's validating [`Scan`], the
//! module's activation scan, so a dump holds exactly what the module would
//! load; a store the module would refuse gives an error (after the
//! exceptions before the fault were written) and no closing element, so
//! `snap_restore` refuses the partial dump.
//!
//! C source: `read_exceptions()` in [drivers/md/dm-snap-persistent.c](srctree/drivers/md/dm-snap-persistent.c)

use std::fmt;
use std::io;
use std::io::Write;

use snap_format::AreaFill;
use snap_format::AreaIo;
use snap_format::BlockSizes;
use snap_format::HeaderDecision;
use snap_format::Layout;
use snap_format::Scan;
use snap_format::ScanStop;
use snap_format::Warning;
use snap_format::SECTOR_SIZE;

use crate::header::read_device_header;
use crate::header::HeaderError;
use crate::io::BlockIo;
use crate::progress::Progress;
use crate::xml;
use crate::xml::DumpHeader;

/// Why a dump failed.
#[derive(Debug)]
pub enum DumpError {
    /// The header could not be read.
    Header(HeaderError),
    /// The device holds no store (magic 0).
    NoStore,
    /// The module would refuse the store: the format core's error.
    Format(snap_format::Error),
    /// Reading a metadata area failed.
    Read {
        /// The area's chunk.
        chunk: u64,
        /// The error.
        error: io::Error,
    },
    /// Writing the dump failed.
    Output(io::Error),
}

impl DumpError {
    /// Exit status of `snap_dump` for this error: 2 when the device or the
    /// output could not be read or written, 1 when the store is bad.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Header(HeaderError::Io(_)) | Self::Read { .. } | Self::Output(_) => 2,
            Self::Header(HeaderError::TooSmall { .. } | HeaderError::LooksLikeXml)
            | Self::NoStore
            | Self::Format(_) => 1,
        }
    }
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(e) => write!(f, "{e}"),
            Self::NoStore => {
                f.write_str("the device holds no snapshot store (magic 0): nothing to dump")
            }
            Self::Format(e) => write!(f, "{e}"),
            Self::Read { chunk, error } => write!(f, "reading chunk {chunk} failed: {error}"),
            Self::Output(e) => write!(f, "writing the dump failed: {e}"),
        }
    }
}

impl std::error::Error for DumpError {}

/// What a successful dump wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpSummary {
    /// The dump's header.
    pub header: DumpHeader,
    /// Exceptions written.
    pub exceptions: u64,
    /// Metadata areas read.
    pub areas: u64,
    /// Nonzero records after the end marker (the module ignores them).
    pub warning: Option<Warning>,
}

/// How many metadata areas ahead of the one being read [`read_area`] asks
/// the device to read ([`BlockIo::will_need`]): the module's prefetch plan
/// (the areas in order, [`Layout::area_location`]), deeper than its 12
/// buffers since a tool has nothing else to do with the device's time. 64
/// areas of 4 KiB chunks are 256 KiB in flight.
pub const READ_AHEAD_AREAS: u64 = 64;

/// Reads metadata area `aio` of a store of `layout` into `buf` (one chunk),
/// asking the device to read ahead along the areas that follow: all of the
/// window when reading area 0 (a walk over the areas starts there), then
/// the one area entering it.
///
/// # Errors
///
/// The device's error; [`io::ErrorKind::InvalidInput`] if the offset
/// overflows.
pub fn read_area<I: BlockIo>(
    io: &I,
    layout: Layout,
    aio: &AreaIo,
    buf: &mut [u8],
) -> io::Result<()> {
    let sector = u64::from(SECTOR_SIZE);
    let first = if aio.area == 0 { 1 } else { READ_AHEAD_AREAS };
    for ahead in first..=READ_AHEAD_AREAS {
        if let Some(offset) = aio
            .area
            .checked_add(ahead)
            .and_then(|a| layout.area_io(a))
            .and_then(|a| a.sector.checked_mul(sector))
        {
            io.will_need(offset, u64::from(layout.chunk_bytes()));
        }
    }
    let offset = aio
        .sector
        .checked_mul(sector)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    io.read_at(offset, buf)
}

/// Dumps the store on `io` to `out`. The output is not flushed.
///
/// # Errors
///
/// See [`DumpError`].
pub fn dump<I: BlockIo, W: Write>(
    io: &I,
    blocks: BlockSizes,
    out: &mut W,
    progress: &mut Progress,
) -> Result<DumpSummary, DumpError> {
    let info = read_device_header(io, blocks).map_err(DumpError::Header)?;
    let decision = info.decision.map_err(DumpError::Format)?;
    let layout = match decision {
        HeaderDecision::New(_) => return Err(DumpError::NoStore),
        HeaderDecision::Invalid(l) | HeaderDecision::Valid(l) => l,
    };
    let header = DumpHeader {
        disk_version: info.header.version,
        valid: info.header.valid,
        chunk_size: layout.chunk_sectors(),
        cow_sectors: info.cow_sectors,
    };
    xml::write_header(out, &header).map_err(DumpError::Output)?;
    let mut summary = DumpSummary {
        header,
        exceptions: 0,
        areas: 0,
        warning: None,
    };
    if let HeaderDecision::Valid(_) = decision {
        dump_areas(io, layout, info.cow_sectors, out, progress, &mut summary)?;
    }
    xml::write_footer(out).map_err(DumpError::Output)?;
    Ok(summary)
}

fn dump_areas<I: BlockIo, W: Write>(
    io: &I,
    layout: Layout,
    cow_sectors: u64,
    out: &mut W,
    progress: &mut Progress,
    summary: &mut DumpSummary,
) -> Result<(), DumpError> {
    let len = usize::try_from(layout.chunk_bytes())
        .map_err(|_| DumpError::Format(snap_format::Error::Overflow))?;
    let mut buf = vec![0u8; len];
    let mut scan = Scan::new(layout, cow_sectors);
    progress.restart("snap_dump", "areas", Some(layout.device_areas(cow_sectors)));
    let result = loop {
        let aio = scan.next_area().map_err(DumpError::Format)?;
        read_area(io, layout, &aio, &mut buf).map_err(|error| DumpError::Read {
            chunk: aio.chunk,
            error,
        })?;
        let fill = scan
            .scan_area(&buf, |e| xml::write_exception(out, e))
            .map_err(|stopped| match stopped.stop {
                ScanStop::Format(e) => DumpError::Format(e),
                ScanStop::Visitor(e) => DumpError::Output(e),
            })?;
        summary.areas = summary.areas.saturating_add(1);
        progress.update(summary.areas);
        match fill {
            AreaFill::Full(next) => scan = next,
            AreaFill::Partial(result) => break result,
        }
    };
    progress.finish();
    summary.exceptions = result.exceptions;
    summary.warning = result.warning;
    Ok(())
}
