// SPDX-License-Identifier: GPL-2.0-only

//! The on-disk header record and the header decision taken at activation.

use super::{
    chunk_size::{
        BlockSizes,
        ChunkSize,
        TableChunkSize, //
    },
    convert::le32,
    error::{
        Error,
        Warning, //
    },
    layout::Layout, //
};
#[cfg(doc)]
use super::{
    committer::Committer,
    scan::{
        scan_areas,
        Scan, //
    }, //
};

/// Magic number of a persistent snapshot header, the bytes `"SnAp"`.
///
/// C: `SNAP_MAGIC`.
pub const SNAP_MAGIC: u32 = 0x7041_6e53;

/// The only on-disk format version this store understands.
///
/// C: `SNAPSHOT_DISK_VERSION`.
pub const SNAPSHOT_DISK_VERSION: u32 = 1;

/// Size in bytes of the on-disk header.
///
/// C: `sizeof(struct disk_header)`.
pub const DISK_HEADER_SIZE: usize = 16;

/// The on-disk header, field by field, as raw values.
///
/// C: `struct disk_header`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiskHeader {
    /// [`SNAP_MAGIC`], or 0 on a fresh device. C: `magic`.
    pub magic: u32,
    /// Nonzero while the snapshot is valid. C: `valid`.
    pub valid: u32,
    /// [`SNAPSHOT_DISK_VERSION`]. C: `version`.
    pub version: u32,
    /// Chunk size in sectors. C: `chunk_size`.
    pub chunk_size: u32,
}

impl DiskHeader {
    /// The header this store writes.
    ///
    /// C: the fields set by `write_header()`.
    pub const fn new(valid: bool, chunk_size: ChunkSize) -> Self {
        Self {
            magic: SNAP_MAGIC,
            valid: if valid { 1 } else { 0 },
            version: SNAPSHOT_DISK_VERSION,
            chunk_size: chunk_size.sectors(),
        }
    }

    /// Decodes the first 16 bytes of `bytes`.
    ///
    /// C: the `le32_to_cpu()` reads in `read_header()`.
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`] if `bytes` is shorter than 16 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let short = Error::BufferSize {
            expected: 16,
            actual: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
        };
        Ok(Self {
            magic: le32(bytes, 0).ok_or(short)?,
            valid: le32(bytes, 4).ok_or(short)?,
            version: le32(bytes, 8).ok_or(short)?,
            chunk_size: le32(bytes, 12).ok_or(short)?,
        })
    }

    /// Encodes the header at the start of `buf` and zeroes the rest of it
    /// (pass the whole header chunk).
    ///
    /// C: `write_header()` before its I/O.
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`] if `buf` is shorter than 16 bytes; `buf` is
    /// then left untouched.
    pub fn encode(&self, buf: &mut [u8]) -> Result<(), Error> {
        if buf.len() < DISK_HEADER_SIZE {
            return Err(Error::BufferSize {
                expected: 16,
                actual: u64::try_from(buf.len()).unwrap_or(u64::MAX),
            });
        }
        buf.fill(0);
        let fields = [self.magic, self.valid, self.version, self.chunk_size];
        for (slot, v) in buf.chunks_exact_mut(4).zip(fields) {
            slot.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    /// The version as C prints it (`%d` of an `int`).
    pub const fn version_as_int(&self) -> i32 {
        i32::from_le_bytes(self.version.to_le_bytes())
    }
}

// ---------------------------------------------------------------------------
// Activation: header decision
// ---------------------------------------------------------------------------

/// What to do after reading the header.
///
/// C: the outcomes of `read_header()` + `persistent_read_metadata()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderDecision {
    /// Magic 0: a new store. Write [`DiskHeader::new`]`(true, ..)` to chunk
    /// 0, zero area 0 on disk, then build [`Committer::new_snapshot`].
    New(Layout),
    /// A valid store: scan its areas ([`Scan`] or [`scan_areas`]), then
    /// build [`Committer::from_scan`].
    Valid(Layout),
    /// A store marked invalid: C returns 1 and dm-snapshot loads it as
    /// invalid. Build [`Committer::new_invalid`]; nothing is scanned.
    Invalid(Layout),
}

impl HeaderDecision {
    /// The layout, whichever the decision. No C counterpart.
    pub const fn layout(&self) -> Layout {
        match self {
            Self::New(l) | Self::Valid(l) | Self::Invalid(l) => *l,
        }
    }

    /// Checks that a store found on disk fits its COW device of
    /// `cow_sectors`: the header chunk and metadata area 0 lie on it. Call it
    /// before allocating anything of the header's chunk size, which a
    /// hostile header may set far beyond the device. A new store is checked
    /// where area 0 is written. No C counterpart.
    ///
    /// # Errors
    ///
    /// [`Error::OnDiskChunkBeyondDevice`] if they do not fit.
    pub fn check_device(self, cow_sectors: u64) -> Result<Self, Error> {
        match self {
            Self::New(_) => Ok(self),
            Self::Valid(l) | Self::Invalid(l) => {
                if l.device_chunks(cow_sectors) >= 2 {
                    Ok(self)
                } else {
                    Err(Error::OnDiskChunkBeyondDevice {
                        chunk_size: l.chunk_sectors(),
                        cow_sectors,
                    })
                }
            }
        }
    }
}

/// Decides what the header in `header_chunk` (at least its first 16 bytes)
/// means, in C's order: magic 0 is a new store; another wrong magic fails;
/// a differing chunk size on disk wins (with a warning through `warn` if
/// the table supplied one) after passing the chunk-size rules; then the
/// version must be 1; then `valid == 0` gives an invalid snapshot.
///
/// C: `read_header()` and the checks of `persistent_read_metadata()`.
///
/// # Errors
///
/// [`Error::InvalidOrCorrupt`], [`Error::InvalidOnDiskChunkSize`],
/// [`Error::UnsupportedVersion`], or [`Error::BufferSize`] for a buffer
/// shorter than 16 bytes.
pub fn read_header<W: FnMut(Warning)>(
    header_chunk: &[u8],
    table: TableChunkSize,
    blocks: BlockSizes,
    mut warn: W,
) -> Result<HeaderDecision, Error> {
    let dh = DiskHeader::decode(header_chunk)?;
    if dh.magic == 0 {
        return Ok(HeaderDecision::New(Layout::new(table.chunk_size)));
    }
    if dh.magic != SNAP_MAGIC {
        return Err(Error::InvalidOrCorrupt { magic: dh.magic });
    }
    let chunk_size = if dh.chunk_size == table.chunk_size.sectors() {
        table.chunk_size
    } else {
        if table.supplied {
            warn(Warning::ChunkSizeOverride {
                disk: dh.chunk_size,
                table: table.chunk_size.sectors(),
            });
        }
        ChunkSize::new(dh.chunk_size, blocks).map_err(|reason| Error::InvalidOnDiskChunkSize {
            chunk_size: dh.chunk_size,
            reason,
        })?
    };
    if dh.version != SNAPSHOT_DISK_VERSION {
        return Err(Error::UnsupportedVersion {
            version: dh.version_as_int(),
        });
    }
    let layout = Layout::new(chunk_size);
    if dh.valid == 0 {
        Ok(HeaderDecision::Invalid(layout))
    } else {
        Ok(HeaderDecision::Valid(layout))
    }
}
