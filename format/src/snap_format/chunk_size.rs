// SPDX-License-Identifier: GPL-2.0-only

//! Block and chunk sizes: logical block sizes and the chunk-size rules.

use super::error::{
    ChunkSizeError,
    Error, //
};

/// Chunk size, in sectors, used when the table gives none (16 KiB).
///
/// C: `DM_CHUNK_SIZE_DEFAULT_SECTORS`.
pub const DM_CHUNK_SIZE_DEFAULT_SECTORS: u32 = 32;

/// Bytes in a sector, as a shift.
///
/// C: `SECTOR_SHIFT`.
pub const SECTOR_SHIFT: u32 = 9;

/// Bytes in a sector.
///
/// C: `SECTOR_SIZE` (`1 << SECTOR_SHIFT`).
pub const SECTOR_SIZE: u32 = 1 << SECTOR_SHIFT;

/// Upper bound of a chunk size in sectors: a chunk in bytes must fit an
/// `int`.
///
/// C: `INT_MAX >> SECTOR_SHIFT` in `dm_exception_store_set_chunk_size()`.
pub const CHUNK_SIZE_LIMIT_SECTORS: u32 = 0x7fff_ffff >> SECTOR_SHIFT;

/// Largest chunk size, in sectors, that passes every rule (`2^21`, 1 GiB):
/// the largest power of two not above [`CHUNK_SIZE_LIMIT_SECTORS`].
///
/// No C counterpart (follows from the C rules).
pub const MAX_CHUNK_SECTORS: u32 = 1 << 21;

/// Largest chunk size in bytes (`2^30`).
///
/// No C counterpart (follows from the C rules).
pub const MAX_CHUNK_BYTES: u32 = 1 << 30;

/// A logical block size in bytes.
///
/// No C counterpart (C calls `bdev_logical_block_size()` where needed).
///
/// # Invariants
///
/// `bytes` is a power of two in `512..=MAX_CHUNK_BYTES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogicalBlockSize {
    bytes: u32,
}

impl LogicalBlockSize {
    /// A 512-byte block size. C: `SECTOR_SIZE`.
    pub const SECTOR: Self = Self { bytes: SECTOR_SIZE };

    /// Checks a block size in bytes.
    ///
    /// No C counterpart (the block layer guarantees it).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBlockSize`] unless `bytes` is a power of two in
    /// `512..=2^30`.
    pub const fn new(bytes: u32) -> Result<Self, Error> {
        if bytes.is_power_of_two() && bytes >= SECTOR_SIZE && bytes <= MAX_CHUNK_BYTES {
            // INVARIANT: checked just above.
            Ok(Self { bytes })
        } else {
            Err(Error::InvalidBlockSize {
                bytes,
                max: MAX_CHUNK_BYTES,
            })
        }
    }

    /// The size in bytes. C: `bdev_logical_block_size()`.
    pub const fn bytes(self) -> u32 {
        self.bytes
    }

    /// The size in sectors (C: `bdev_logical_block_size(bdev) >> 9`).
    pub const fn sectors(self) -> u32 {
        self.bytes.wrapping_shr(9)
    }
}

/// The logical block sizes of the two devices of a snapshot, which bound
/// the chunk size.
///
/// C: `bdev_logical_block_size()` of `dm_snap_origin()` and `dm_snap_cow()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockSizes {
    /// Logical block size of the origin device.
    pub origin: LogicalBlockSize,
    /// Logical block size of the COW device.
    pub cow: LogicalBlockSize,
}

impl BlockSizes {
    /// Both devices with 512-byte blocks (accepts every chunk size that is
    /// a power of two up to the maximum). No C counterpart.
    pub const SECTOR: Self = Self {
        origin: LogicalBlockSize::SECTOR,
        cow: LogicalBlockSize::SECTOR,
    };

    /// Checks both sizes, given in bytes. No C counterpart.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBlockSize`] for the first size that is not a power
    /// of two in `512..=2^30`.
    pub const fn new(origin_bytes: u32, cow_bytes: u32) -> Result<Self, Error> {
        let origin = match LogicalBlockSize::new(origin_bytes) {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
        let cow = match LogicalBlockSize::new(cow_bytes) {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
        Ok(Self { origin, cow })
    }
}

/// A validated chunk size.
///
/// C: `store->chunk_size` with `chunk_mask` and `chunk_shift`.
///
/// # Invariants
///
/// `sectors` is a power of two in `1..=MAX_CHUNK_SECTORS`, `shift` is its
/// base-2 logarithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkSize {
    sectors: u32,
}

impl ChunkSize {
    /// The default chunk size, 32 sectors.
    ///
    /// C: `DM_CHUNK_SIZE_DEFAULT_SECTORS`.
    pub const DEFAULT: Self = Self {
        sectors: DM_CHUNK_SIZE_DEFAULT_SECTORS,
    };

    /// The smallest chunk size, one sector.
    ///
    /// No C counterpart (follows from the C rules).
    pub const MIN: Self = Self { sectors: 1 };

    /// The largest chunk size, `2^21` sectors.
    ///
    /// No C counterpart (follows from the C rules).
    pub const MAX: Self = Self {
        sectors: MAX_CHUNK_SECTORS,
    };

    /// Applies the chunk-size rules, in C's order: power of two, multiple of
    /// both logical block sizes (in sectors), at most `INT_MAX >> 9`.
    ///
    /// C: `dm_exception_store_set_chunk_size()`.
    ///
    /// # Errors
    ///
    /// The [`ChunkSizeError`] of the first rule broken.
    pub const fn new(sectors: u32, blocks: BlockSizes) -> Result<Self, ChunkSizeError> {
        if !sectors.is_power_of_two() {
            return Err(ChunkSizeError::NotPowerOf2);
        }
        // Block sizes are powers of two of at least one sector, so a
        // power-of-two chunk size is a multiple of one exactly when it is
        // not smaller.
        if sectors < blocks.cow.sectors() || sectors < blocks.origin.sectors() {
            return Err(ChunkSizeError::NotMultipleOfBlockSize);
        }
        if sectors > CHUNK_SIZE_LIMIT_SECTORS {
            return Err(ChunkSizeError::TooHigh);
        }
        // INVARIANT: a power of two at most `INT_MAX >> 9` is at most 2^21.
        Ok(Self { sectors })
    }

    /// The default chunk size for a COW device: 32 sectors, or the COW's
    /// logical block size if larger. Like C, the origin's block size is not
    /// consulted.
    ///
    /// C: the `!ps->store->chunk_size` branch of `read_header()`.
    pub const fn default_for(cow: LogicalBlockSize) -> Self {
        let s = cow.sectors();
        // INVARIANT: `cow` is a power of two of at most 2^30 bytes, so `s`
        // is a power of two of at most 2^21 sectors, as is 32.
        if s > DM_CHUNK_SIZE_DEFAULT_SECTORS {
            Self { sectors: s }
        } else {
            Self::DEFAULT
        }
    }

    /// The size in sectors. C: `store->chunk_size`.
    pub const fn sectors(self) -> u32 {
        self.sectors
    }

    /// The size in bytes. C: `store->chunk_size << SECTOR_SHIFT`.
    pub const fn bytes(self) -> u32 {
        // Cannot overflow: at most 2^21 << 9 = 2^30.
        self.sectors.wrapping_shl(9)
    }

    /// Base-2 logarithm of the size in sectors. C: `store->chunk_shift`.
    pub const fn shift(self) -> u32 {
        self.sectors.trailing_zeros()
    }

    /// The size in sectors minus one. C: `store->chunk_mask`.
    pub const fn mask(self) -> u32 {
        self.sectors.wrapping_sub(1)
    }
}

/// The chunk size the store starts with, before the header is read: the
/// table's, or the default when the table gave 0.
///
/// C: `store->chunk_size` as left by `set_chunk_size()` in
/// dm-exception-store.c, completed by `read_header()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableChunkSize {
    /// The chunk size to use.
    pub chunk_size: ChunkSize,
    /// Whether the table supplied it (C: `chunk_size_supplied`).
    pub supplied: bool,
}

impl TableChunkSize {
    /// Resolves the table's chunk size; 0 means "use the default".
    ///
    /// C: `set_chunk_size()` and the default branch of `read_header()`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidChunkSize`] if a nonzero size breaks a rule (C has
    /// checked it already when the table was parsed).
    pub const fn new(table_sectors: u32, blocks: BlockSizes) -> Result<Self, Error> {
        if table_sectors == 0 {
            return Ok(Self {
                chunk_size: ChunkSize::default_for(blocks.cow),
                supplied: false,
            });
        }
        match ChunkSize::new(table_sectors, blocks) {
            Ok(chunk_size) => Ok(Self {
                chunk_size,
                supplied: true,
            }),
            Err(reason) => Err(Error::InvalidChunkSize {
                chunk_size: table_sectors,
                reason,
            }),
        }
    }

    /// Checks that a COW device of `cow_sectors` holds at least one chunk,
    /// the header chunk, before anything of that size is allocated or read.
    /// No C counterpart.
    ///
    /// # Errors
    ///
    /// [`Error::CowSmallerThanChunk`] if it does not.
    pub fn check_device(self, cow_sectors: u64) -> Result<Self, Error> {
        let chunk_size = self.chunk_size.sectors();
        if cow_sectors < u64::from(chunk_size) {
            return Err(Error::CowSmallerThanChunk {
                chunk_size,
                cow_sectors,
            });
        }
        Ok(self)
    }
}
