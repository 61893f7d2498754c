// SPDX-License-Identifier: GPL-2.0-only

//! Reading the header of a COW device and deciding what it holds, with the
//! format core's [`read_header`], as the module does at activation.
//!
//! C source: `read_header()` in [drivers/md/dm-snap-persistent.c](srctree/drivers/md/dm-snap-persistent.c)

use std::fmt;
use std::io;

use snap_format::read_header;
use snap_format::BlockSizes;
use snap_format::DiskHeader;
use snap_format::HeaderDecision;
use snap_format::TableChunkSize;
use snap_format::DISK_HEADER_SIZE;
use snap_format::SECTOR_SIZE;
use snap_format::SNAP_MAGIC;

use crate::io::BlockIo;

/// Bytes read for the header: one sector, which holds the 16-byte header
/// whatever the chunk size.
pub const HEADER_READ_BYTES: usize = SECTOR_SIZE as usize;

/// What the header chunk of a device says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    /// The raw header fields.
    pub header: DiskHeader,
    /// Size of the device in bytes.
    pub cow_bytes: u64,
    /// Size of the device in whole sectors (what the module sees).
    pub cow_sectors: u64,
    /// The module's decision, or the error it would fail activation with.
    pub decision: Result<HeaderDecision, snap_format::Error>,
}

/// Why the header could not be looked at.
#[derive(Debug)]
pub enum HeaderError {
    /// Reading the device, or finding its size, failed.
    Io(io::Error),
    /// The device is shorter than a header.
    TooSmall {
        /// Its size in bytes.
        bytes: u64,
    },
    /// The device starts with `<` where a header has its magic: a dump (or
    /// other XML), given where a COW device was expected.
    LooksLikeXml,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::TooSmall { bytes } => write!(
                f,
                "the COW device has {bytes} bytes, too few to hold a snapshot header"
            ),
            Self::LooksLikeXml => f.write_str(
                "this looks like XML (a dump written by snap_dump?), not a COW device; \
                 snap_restore writes a dump to a COW device",
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

impl From<io::Error> for HeaderError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// The block sizes that bound the chunk size: the given logical block size
/// for both devices, 512 bytes if none is given.
///
/// # Errors
///
/// [`snap_format::Error::InvalidBlockSize`] unless the size is a power of
/// two in `512..=2^30`.
pub fn block_sizes(block_size: Option<u32>) -> Result<BlockSizes, snap_format::Error> {
    match block_size {
        None => Ok(BlockSizes::SECTOR),
        Some(b) => BlockSizes::new(b, b),
    }
}

/// Reads the header of `io` and applies the module's header decision, with
/// no chunk size from a table (the header's chunk size is used after the
/// chunk-size rules for `blocks`).
///
/// # Errors
///
/// [`HeaderError::Io`] if the device cannot be read,
/// [`HeaderError::TooSmall`] if it is shorter than one header, or
/// [`HeaderError::LooksLikeXml`] if it holds XML where the header should
/// be.
pub fn read_device_header<I: BlockIo>(
    io: &I,
    blocks: BlockSizes,
) -> Result<HeaderInfo, HeaderError> {
    let cow_bytes = io.size()?;
    let len = usize::try_from(cow_bytes).map_or(HEADER_READ_BYTES, |b| b.min(HEADER_READ_BYTES));
    if len < DISK_HEADER_SIZE {
        return Err(HeaderError::TooSmall { bytes: cow_bytes });
    }
    let mut buf = vec![0u8; len];
    io.read_at(0, &mut buf)?;
    let header = DiskHeader::decode(&buf).map_err(|e| io::Error::other(e.to_string()))?;
    if header.magic != SNAP_MAGIC && looks_like_xml(&buf) {
        return Err(HeaderError::LooksLikeXml);
    }
    let cow_sectors = cow_bytes / u64::from(SECTOR_SIZE);
    let decision = TableChunkSize::new(0, blocks)
        .and_then(|table| read_header(&buf, table, blocks, |_| {}))
        .and_then(|d| d.check_device(cow_sectors));
    Ok(HeaderInfo {
        header,
        cow_bytes,
        cow_sectors,
        decision,
    })
}

/// Whether `bytes` start like XML: `<` after optional white space.
fn looks_like_xml(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

/// Whether a header is that of a store the module would load as valid
/// (magic `SnAp`, `valid` nonzero), whatever else it holds.
pub fn holds_valid_store(header: &DiskHeader) -> bool {
    header.magic == SNAP_MAGIC && header.valid != 0
}
