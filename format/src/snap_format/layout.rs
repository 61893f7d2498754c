// SPDX-License-Identifier: GPL-2.0-only

//! Layout arithmetic: where the header, the metadata areas and the data
//! chunks lie on the COW device, and the checks of exceptions against it.

use super::{
    chunk_size::{
        ChunkSize,
        SECTOR_SHIFT, //
    },
    convert::usize_of,
    error::Error,
    records::{
        read_exception,
        Exception, //
    }, //
};
#[cfg(doc)]
use super::{
    committer::Committer,
    scan::Scan, //
};
use core::cmp::max;
use core::ops::Range;

/// Number of chunks at the start of the COW device that hold the header.
///
/// C: `NUM_SNAPSHOT_HDR_CHUNKS`.
pub const NUM_SNAPSHOT_HDR_CHUNKS: u64 = 1;

/// Number of low bits of a `chunk_t` that hold the chunk number inside
/// dm-snapshot's in-memory exception table (the top 8 bits count
/// consecutive chunks).
///
/// C: `DM_CHUNK_NUMBER_BITS`.
pub const DM_CHUNK_NUMBER_BITS: u32 = 56;

/// Largest chunk number dm-snapshot can hold in memory, `2^56 - 1`.
///
/// C: the mask of `dm_chunk_number()`.
pub const DM_CHUNK_NUMBER_MAX: u64 = 0x00ff_ffff_ffff_ffff;

/// Largest size, in sectors, any block device can have: its size in bytes
/// must fit a signed 64-bit `loff_t`.
///
/// No C counterpart (the kernel's `MAX_LFS_FILESIZE >> SECTOR_SHIFT`); used
/// to bound `old_chunk` values read from disk.
pub const MAX_DEVICE_SECTORS: u64 = 0x7fff_ffff_ffff_ffff >> SECTOR_SHIFT;

/// Value of `next_free` for a store with no exception: the header and the
/// first metadata area are in use.
///
/// C: `NUM_SNAPSHOT_HDR_CHUNKS + 1` in `persistent_ctr()`.
pub const INITIAL_NEXT_FREE: u64 = 2;

/// Space accounting reported in the snapshot status line.
///
/// C: the three outputs of `persistent_usage()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Size of the COW device in sectors. C: `*total_sectors`.
    pub total_sectors: u64,
    /// `next_free * chunk_size`. C: `*sectors_allocated`.
    pub sectors_allocated: u64,
    /// `(current_area + 2) * chunk_size`: the header plus every area up to
    /// the current one. C: `*metadata_sectors`.
    pub metadata_sectors: u64,
}

/// Whole-chunk I/O on one metadata area.
///
/// No C counterpart (C builds a `dm_io_region` in `chunk_io()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AreaIo {
    /// The area index.
    pub area: u64,
    /// The area's chunk (C: `area_location()`).
    pub chunk: u64,
    /// First sector of the chunk.
    pub sector: u64,
    /// Sectors in the chunk.
    pub sectors: u32,
}

/// A partial write of the in-memory area: the bytes `offset..offset+len`
/// of the area buffer go to `sector..sector+sectors` of the COW device.
///
/// No C counterpart (C writes the whole chunk in `area_io()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AreaWrite {
    /// The area index.
    pub area: u64,
    /// The area's chunk.
    pub chunk: u64,
    /// Byte offset of the write inside the area buffer (block aligned).
    pub offset: u32,
    /// Bytes to write (a nonzero multiple of the write block size).
    pub len: u32,
    /// First sector written on the COW device.
    pub sector: u64,
    /// Sectors written.
    pub sectors: u32,
}

impl AreaWrite {
    /// The byte range of the area buffer to write. No C counterpart.
    pub fn range(&self) -> Option<Range<usize>> {
        let start = usize_of(self.offset)?;
        let end = start.checked_add(usize_of(self.len)?)?;
        Some(start..end)
    }

    /// The bytes of `area` to write. No C counterpart.
    pub fn bytes<'a>(&self, area: &'a [u8]) -> Option<&'a [u8]> {
        area.get(self.range()?)
    }
}

/// Geometry of a persistent store for one chunk size.
///
/// C: the `exceptions_per_area` field of `struct pstore` plus the helpers
/// that use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    chunk_size: ChunkSize,
}

impl Layout {
    /// The layout for a chunk size.
    ///
    /// C: the `exceptions_per_area` computation in
    /// `persistent_read_metadata()`.
    pub const fn new(chunk_size: ChunkSize) -> Self {
        Self { chunk_size }
    }

    /// The chunk size. C: `store->chunk_size`.
    pub const fn chunk_size(self) -> ChunkSize {
        self.chunk_size
    }

    /// Chunk size in sectors. C: `store->chunk_size`.
    pub const fn chunk_sectors(self) -> u32 {
        self.chunk_size.sectors()
    }

    /// Chunk size in bytes; also the size of every area buffer.
    /// C: `store->chunk_size << SECTOR_SHIFT`.
    pub const fn chunk_bytes(self) -> u32 {
        self.chunk_size.bytes()
    }

    /// Exception records in one area: `chunk_bytes / 16`, at least 32.
    ///
    /// C: `ps->exceptions_per_area`.
    pub const fn exceptions_per_area(self) -> u32 {
        self.chunk_size.bytes().wrapping_shr(4)
    }

    /// Distance in chunks between two metadata areas:
    /// `exceptions_per_area + 1`.
    ///
    /// C: `stride` in `skip_metadata()`.
    pub fn stride(self) -> u64 {
        // At most 2^26 + 1: cannot overflow.
        u64::from(self.exceptions_per_area()).wrapping_add(1)
    }

    /// The chunk of metadata area `area`: `1 + area * stride`.
    ///
    /// C: `area_location()`.
    pub fn area_location(self, area: u64) -> Option<u64> {
        area.checked_mul(self.stride())?
            .checked_add(NUM_SNAPSHOT_HDR_CHUNKS)
    }

    /// Moves `next_free` past a metadata chunk: returns `next_free + 1` when
    /// `next_free % stride == 1`, otherwise `next_free` unchanged. Like C it
    /// tests the remainder, so `next_free == 1` also moves to 2.
    ///
    /// C: `skip_metadata()`.
    pub fn skip_metadata(self, next_free: u64) -> Option<u64> {
        if next_free.checked_rem(self.stride())? == NUM_SNAPSHOT_HDR_CHUNKS {
            next_free.checked_add(1)
        } else {
            Some(next_free)
        }
    }

    /// Whether `chunk` is a header chunk (chunk 0).
    ///
    /// C: `NUM_SNAPSHOT_HDR_CHUNKS`.
    pub const fn is_header_chunk(self, chunk: u64) -> bool {
        chunk < NUM_SNAPSHOT_HDR_CHUNKS
    }

    /// If `chunk` is the chunk of a metadata area, that area's index.
    ///
    /// No C counterpart (inverse of `area_location()`).
    pub fn metadata_area_of(self, chunk: u64) -> Option<u64> {
        let rel = chunk.checked_sub(NUM_SNAPSHOT_HDR_CHUNKS)?;
        let stride = self.stride();
        if rel.checked_rem(stride)? == 0 {
            rel.checked_div(stride)
        } else {
            None
        }
    }

    /// Whether `chunk` is the chunk of a metadata area.
    ///
    /// No C counterpart.
    pub fn is_metadata_chunk(self, chunk: u64) -> bool {
        self.metadata_area_of(chunk).is_some()
    }

    /// Whether `chunk` may hold exception data: neither the header nor a
    /// metadata area.
    ///
    /// No C counterpart.
    pub fn is_data_chunk(self, chunk: u64) -> bool {
        !self.is_header_chunk(chunk) && !self.is_metadata_chunk(chunk)
    }

    /// The area whose stretch of the device contains `chunk`: its metadata
    /// chunk and the `exceptions_per_area` data chunks after it. `None` for
    /// the header.
    ///
    /// No C counterpart.
    pub fn area_of_chunk(self, chunk: u64) -> Option<u64> {
        chunk
            .checked_sub(NUM_SNAPSHOT_HDR_CHUNKS)?
            .checked_div(self.stride())
    }

    /// First sector of `chunk`. C: `chunk_to_sector()` in dm-snap.c.
    pub fn chunk_to_sector(self, chunk: u64) -> Option<u64> {
        chunk.checked_mul(u64::from(self.chunk_sectors()))
    }

    /// The chunk holding `sector`. C: `sector_to_chunk()`.
    pub const fn sector_to_chunk(self, sector: u64) -> u64 {
        sector.wrapping_shr(self.chunk_size.shift())
    }

    /// Whole chunks on a device of `sectors` sectors (a partial last chunk
    /// is not usable, as in C's `-ENOSPC` test).
    ///
    /// C: `dm_bufio_get_device_size()` for a chunk-sized bufio client.
    pub const fn device_chunks(self, sectors: u64) -> u64 {
        self.sector_to_chunk(sectors)
    }

    /// Metadata areas whose chunk lies on a device of `sectors` sectors.
    ///
    /// No C counterpart.
    pub fn device_areas(self, sectors: u64) -> u64 {
        match self
            .device_chunks(sectors)
            .checked_sub(NUM_SNAPSHOT_HDR_CHUNKS)
        {
            Some(rest) => rest.div_ceil(self.stride()),
            None => 0,
        }
    }

    /// Largest `old_chunk` accepted from disk: a chunk whose last sector
    /// lies within [`MAX_DEVICE_SECTORS`], and at most
    /// [`DM_CHUNK_NUMBER_MAX`].
    ///
    /// No C counterpart.
    pub fn max_old_chunk(self) -> u64 {
        let whole = MAX_DEVICE_SECTORS
            .checked_div(u64::from(self.chunk_sectors()))
            .unwrap_or(0);
        whole.saturating_sub(1).min(DM_CHUNK_NUMBER_MAX)
    }

    /// Usage figures exactly as C computes them.
    ///
    /// C: `persistent_usage()`.
    pub fn usage(self, next_free: u64, current_area: u64, cow_sectors: u64) -> Option<Usage> {
        let cs = u64::from(self.chunk_sectors());
        Some(Usage {
            total_sectors: cow_sectors,
            sectors_allocated: next_free.checked_mul(cs)?,
            metadata_sectors: current_area
                .checked_add(1)?
                .checked_add(NUM_SNAPSHOT_HDR_CHUNKS)?
                .checked_mul(cs)?,
        })
    }

    /// Whole-chunk I/O description of area `area`.
    ///
    /// C: the region built by `area_io()` / `zero_disk_area()`.
    pub fn area_io(self, area: u64) -> Option<AreaIo> {
        let chunk = self.area_location(area)?;
        Some(AreaIo {
            area,
            chunk,
            sector: self.chunk_to_sector(chunk)?,
            sectors: self.chunk_sectors(),
        })
    }

    /// The value of `next_free` after a scan whose largest `new_chunk` was
    /// `max_new_chunk` (`None` if the store is empty): C starts from
    /// [`INITIAL_NEXT_FREE`], raises it to `new_chunk + 1`, then applies
    /// [`Layout::skip_metadata`] once.
    ///
    /// C: `insert_exceptions()` and the end of `read_exceptions()`.
    pub fn next_free_after_scan(self, max_new_chunk: Option<u64>) -> Option<u64> {
        let raised = match max_new_chunk {
            Some(c) => max(INITIAL_NEXT_FREE, c.checked_add(1)?),
            None => INITIAL_NEXT_FREE,
        };
        self.skip_metadata(raised)
    }

    pub(super) fn check_area_len(self, len: usize) -> Result<(), Error> {
        let expected = u64::from(self.chunk_bytes());
        let actual = u64::try_from(len).map_err(|_| Error::Overflow)?;
        if actual == expected {
            Ok(())
        } else {
            Err(Error::BufferSize { expected, actual })
        }
    }

    /// Checks that every record of `area`, the bytes of full area
    /// `area_index` read back for merging, is a valid exception on a COW
    /// device of `cow_sectors` sectors (it was full when written, so no
    /// record may be an end marker). [`Committer::prepare_merge`] calls it.
    ///
    /// No C check (C merges whatever it reads).
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`], [`Error::UnexpectedEndMarker`] or a
    /// validation error of [`Layout::check_exception`].
    pub fn check_full_area(
        self,
        area_index: u64,
        area: &[u8],
        cow_sectors: u64,
    ) -> Result<(), Error> {
        self.check_area_len(area.len())?;
        let cow_chunks = self.device_chunks(cow_sectors);
        for index in 0..self.exceptions_per_area() {
            let e = read_exception(area, index).ok_or(Error::Overflow)?;
            if e.is_end_marker() {
                return Err(Error::UnexpectedEndMarker {
                    area: area_index,
                    index,
                });
            }
            self.check_exception(area_index, index, e, Some(cow_chunks))?;
        }
        Ok(())
    }

    /// Checks one exception found (or about to be stored) at `index` of
    /// `area` against the validation rules.
    ///
    /// No C counterpart: see [`Scan`] for the rules.
    ///
    /// # Errors
    ///
    /// The variant of the first rule broken.
    pub fn check_exception(
        self,
        area: u64,
        index: u32,
        e: Exception,
        cow_chunks: Option<u64>,
    ) -> Result<(), Error> {
        if e.new_chunk == 0 {
            return Err(Error::NewChunkIsHeader { area, index });
        }
        if let Some(cow_chunks) = cow_chunks {
            if e.new_chunk >= cow_chunks {
                return Err(Error::NewChunkBeyondDevice {
                    area,
                    index,
                    new_chunk: e.new_chunk,
                    cow_chunks,
                });
            }
        }
        if let Some(metadata_area) = self.metadata_area_of(e.new_chunk) {
            return Err(Error::NewChunkIsMetadata {
                area,
                index,
                new_chunk: e.new_chunk,
                metadata_area,
            });
        }
        let max = self.max_old_chunk();
        if e.old_chunk > max {
            return Err(Error::OldChunkTooLarge {
                area,
                index,
                old_chunk: e.old_chunk,
                max,
            });
        }
        Ok(())
    }
}
