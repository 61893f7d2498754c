// SPDX-License-Identifier: GPL-2.0-only

//! Hostile COW images for `hostile_load`, which loads every image of the
//! fuzz corpus and a few hundred mutants of valid stores under the snapshot
//! target and compares what the kernel did with what the format core says
//! it must do.
//!
//! - [`corpus_image`]: the image and table chunk size of a fuzz input.
//! - [`bases`] and [`mutants`]: valid stores built with the format core's
//!   encoders, and images derived from them deterministically (bit flips,
//!   truncations, swapped areas, records pointing where they must not,
//!   header field changes).
//! - [`expect`]: the format core's verdict on an image for a table chunk
//!   size: refused, a new store, an invalid snapshot, or a valid store with
//!   the usage figures its status line must show.
//! - [`judge`]: the comparison of that verdict with what the kernel did.
//! - [`repaired`]: the store `snap_dump --repair` and `snap_restore` make of
//!   a damaged image, which the kernel must load as it is.
//! - [`load`]: the loader itself, which puts each image under the snapshot
//!   target.

#![forbid(unsafe_code)]

pub mod load;

use std::fmt;
use std::io;

use snap_format::read_exception;
use snap_format::read_header;
use snap_format::write_exception;
use snap_format::BlockSizes;
use snap_format::ChunkSize;
use snap_format::DiskHeader;
use snap_format::Error;
use snap_format::Exception;
use snap_format::Layout;
use snap_format::TableChunkSize;
use snap_format::Usage;
use snap_format::DISK_EXCEPTION_SIZE;
use snap_format::DISK_HEADER_SIZE;
use snap_format::INITIAL_NEXT_FREE;
use snap_format::SECTOR_SIZE;
use snap_format::SNAP_MAGIC;
use snap_tools::check::check;
use snap_tools::check::CheckOptions;
use snap_tools::check::Kind as ProblemKind;
use snap_tools::check::Verdict;
use snap_tools::io::MemIo;
use snap_tools::progress::Progress;
use snap_tools::repair::repair;
use snap_tools::repair::RepairOptions;
use snap_tools::restore::restore;
use snap_tools::restore::RestoreOptions;

use crate::tag::Rng;

/// Bytes in a sector: a COW device is a whole number of them.
pub const SECTOR: usize = SECTOR_SIZE as usize;

/// Mutants `hostile_load` makes unless told otherwise.
pub const DEFAULT_MUTANTS: usize = 240;

/// Fewest mutants a run must load to count.
pub const MIN_MUTANTS: usize = 200;

/// The table chunk size (sectors, 0 for the default) and the image of a
/// fuzz input of `parse_cow`: byte 0 is the control byte (bits 0-1 the
/// table chunk size `1 << n`, bit 2 whether the table supplies it), the
/// rest the image, padded with zeros to whole sectors (at least one).
/// `None` for an empty input.
pub fn corpus_image(input: &[u8]) -> Option<(u32, Vec<u8>)> {
    let (&ctl, image) = input.split_first()?;
    let table = if ctl & 4 != 0 { 1u32 << (ctl & 3) } else { 0 };
    let mut bytes = image.to_vec();
    bytes.resize(image.len().next_multiple_of(SECTOR).max(SECTOR), 0);
    Some((table, bytes))
}

/// A valid store the mutants derive from.
#[derive(Clone, Debug)]
pub struct Base {
    /// Its name in reports.
    pub name: &'static str,
    /// Its layout.
    pub layout: Layout,
    /// Exceptions in it, filling areas in order.
    pub exceptions: u32,
    /// The image: header, areas, and data chunks holding a pattern.
    pub image: Vec<u8>,
}

impl Base {
    /// A store of `chunks` chunks of `chunk_sectors` sectors holding
    /// `exceptions` exceptions, allocated as the store allocates them.
    ///
    /// # Errors
    ///
    /// The format core's error for a bad chunk size or records that do not
    /// fit the device.
    pub fn build(
        name: &'static str,
        chunk_sectors: u32,
        chunks: u64,
        exceptions: u32,
    ) -> Result<Self, Error> {
        let chunk_size = ChunkSize::new(chunk_sectors, BlockSizes::SECTOR).map_err(|reason| {
            Error::InvalidChunkSize {
                chunk_size: chunk_sectors,
                reason,
            }
        })?;
        let layout = Layout::new(chunk_size);
        let cb = layout.chunk_bytes() as usize;
        let mut image = vec![0u8; cb * chunks as usize];
        for (c, chunk) in image.chunks_exact_mut(cb).enumerate() {
            if layout.is_data_chunk(c as u64) {
                chunk.fill(0xa5 ^ c as u8);
            }
        }
        DiskHeader::new(true, chunk_size).encode(&mut image[..cb])?;
        let mut base = Self {
            name,
            layout,
            exceptions,
            image: Vec::new(),
        };
        let mut next = INITIAL_NEXT_FREE;
        for k in 0..exceptions {
            while !layout.is_data_chunk(next) {
                next += 1;
            }
            if next >= chunks {
                return Err(Error::Overflow);
            }
            let e = Exception {
                old_chunk: u64::from(k) * 7 % 1009 + 1,
                new_chunk: next,
            };
            base.write_record(&mut image, k, e).ok_or(Error::Overflow)?;
            next += 1;
        }
        base.image = image;
        Ok(base)
    }

    fn chunk_bytes(&self) -> usize {
        self.layout.chunk_bytes() as usize
    }

    /// The `new_chunk` of the last exception.
    pub fn last_new_chunk(&self) -> u64 {
        self.exceptions
            .checked_sub(1)
            .and_then(|k| self.record(&self.image, k))
            .map_or(0, |e| e.new_chunk)
    }

    /// Whole chunks of the image.
    pub fn chunks(&self) -> u64 {
        (self.image.len() / self.chunk_bytes()) as u64
    }

    /// Areas holding exceptions (the last one partial).
    pub fn areas_used(&self) -> u64 {
        u64::from(self.exceptions / self.layout.exceptions_per_area()) + 1
    }

    /// Byte offset in the image of the chunk of metadata area `area`.
    fn area_offset(&self, area: u64) -> Option<usize> {
        let chunk = usize::try_from(self.layout.area_location(area)?).ok()?;
        chunk.checked_mul(self.chunk_bytes())
    }

    /// The area and index of the `k`-th exception.
    fn place(&self, k: u32) -> (u64, u32) {
        let epa = self.layout.exceptions_per_area();
        (u64::from(k / epa), k % epa)
    }

    fn record(&self, image: &[u8], k: u32) -> Option<Exception> {
        let (area, index) = self.place(k);
        let at = self.area_offset(area)?;
        read_exception(image.get(at..at + self.chunk_bytes())?, index)
    }

    fn write_record(&self, image: &mut [u8], k: u32, e: Exception) -> Option<()> {
        let (area, index) = self.place(k);
        let at = self.area_offset(area)?;
        write_exception(image.get_mut(at..at + self.chunk_bytes())?, index, e)
    }
}

/// The valid stores mutants derive from: 512-byte, 1 KiB and 4 KiB chunks,
/// each with a full area 0 and exceptions in at least one more area.
///
/// # Errors
///
/// The format core's error if one cannot be built.
pub fn bases() -> Result<Vec<Base>, Error> {
    Ok(vec![
        Base::build("base-512", 1, 90, 71)?,
        Base::build("base-1k", 2, 150, 74)?,
        Base::build("base-4k", 8, 270, 261)?,
    ])
}

/// The kinds of mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mutation {
    /// One to three bits of the 16-byte header flipped.
    HeaderBitFlip,
    /// One to four bits of a metadata area flipped.
    AreaBitFlip,
    /// The image cut short (the COW device is that size).
    Truncation,
    /// Two metadata areas swapped.
    SwappedAreas,
    /// A record's `new_chunk` at or past the device end.
    NewChunkBeyondEnd,
    /// A record's `new_chunk` on a metadata area, or 0 (an early end
    /// marker).
    NewChunkAtMetadata,
    /// The header's chunk size changed.
    ChunkSizeField,
    /// A record's `old_chunk` around the largest the store accepts.
    OldChunkTooLarge,
    /// A record's `new_chunk` equal to another's.
    DuplicateNewChunk,
    /// The header's `valid` field changed.
    ValidField,
    /// The header's magic changed (0: no store at all).
    MagicField,
    /// The header's version changed.
    VersionField,
    /// The whole header chunk zeroed.
    ZeroedHeader,
    /// A metadata area in use zeroed.
    ZeroedArea,
    /// A metadata area in use torn: its sectors from one on zeroed.
    TornArea,
    /// A metadata area in use torn over old contents: its sectors from one
    /// on taken from another area.
    StaleSectors,
    /// One sector of a metadata area in use zeroed.
    ZeroedSector,
    /// A metadata area in use filled with random bytes.
    RandomArea,
    /// One metadata area in use copied over another.
    CopiedArea,
    /// Everything from a chunk after the header on zeroed.
    ZeroedTail,
    /// Random records after the end marker of the last area.
    GarbageAfterEndMarker,
    /// The area after the last one in use holding a copy of area 0, as an
    /// older, longer store would have left it.
    StaleAreaAfterEnd,
    /// A record's `new_chunk` set to 0 (an end marker that keeps its
    /// `old_chunk`).
    EarlyEndMarker,
    /// A record zeroed (an end marker in the middle of the store).
    ZeroedRecord,
    /// A record's bytes all set to 0xff.
    AllOnesRecord,
    /// A record copied over the next one.
    DuplicateRecord,
    /// Two records swapped.
    SwappedRecords,
    /// A record's `old_chunk` equal to another's.
    DuplicateOldChunk,
    /// One bit of a record's `new_chunk` flipped.
    NewChunkBitFlip,
    /// One bit of a record's `old_chunk` flipped.
    OldChunkBitFlip,
    /// A record's `new_chunk` stored big-endian.
    ByteSwappedNewChunk,
    /// A record's `new_chunk` moved to a data chunk no record uses.
    NewChunkUnallocated,
}

impl Mutation {
    /// Every kind, in the order [`mutants`] cycles through them.
    pub const ALL: [Self; 32] = [
        Self::HeaderBitFlip,
        Self::AreaBitFlip,
        Self::Truncation,
        Self::SwappedAreas,
        Self::NewChunkBeyondEnd,
        Self::NewChunkAtMetadata,
        Self::ChunkSizeField,
        Self::OldChunkTooLarge,
        Self::DuplicateNewChunk,
        Self::ValidField,
        Self::MagicField,
        Self::VersionField,
        Self::ZeroedHeader,
        Self::ZeroedArea,
        Self::TornArea,
        Self::StaleSectors,
        Self::ZeroedSector,
        Self::RandomArea,
        Self::CopiedArea,
        Self::ZeroedTail,
        Self::GarbageAfterEndMarker,
        Self::StaleAreaAfterEnd,
        Self::EarlyEndMarker,
        Self::ZeroedRecord,
        Self::AllOnesRecord,
        Self::DuplicateRecord,
        Self::SwappedRecords,
        Self::DuplicateOldChunk,
        Self::NewChunkBitFlip,
        Self::OldChunkBitFlip,
        Self::ByteSwappedNewChunk,
        Self::NewChunkUnallocated,
    ];

    /// Its name in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HeaderBitFlip => "header-bit-flip",
            Self::AreaBitFlip => "area-bit-flip",
            Self::Truncation => "truncation",
            Self::SwappedAreas => "swapped-areas",
            Self::NewChunkBeyondEnd => "new-chunk-beyond-end",
            Self::NewChunkAtMetadata => "new-chunk-at-metadata",
            Self::ChunkSizeField => "chunk-size-field",
            Self::OldChunkTooLarge => "old-chunk-too-large",
            Self::DuplicateNewChunk => "duplicate-new-chunk",
            Self::ValidField => "valid-field",
            Self::MagicField => "magic-field",
            Self::VersionField => "version-field",
            Self::ZeroedHeader => "zeroed-header",
            Self::ZeroedArea => "zeroed-area",
            Self::TornArea => "torn-area",
            Self::StaleSectors => "stale-sectors",
            Self::ZeroedSector => "zeroed-sector",
            Self::RandomArea => "random-area",
            Self::CopiedArea => "copied-area",
            Self::ZeroedTail => "zeroed-tail",
            Self::GarbageAfterEndMarker => "garbage-after-end-marker",
            Self::StaleAreaAfterEnd => "stale-area-after-end",
            Self::EarlyEndMarker => "early-end-marker",
            Self::ZeroedRecord => "zeroed-record",
            Self::AllOnesRecord => "all-ones-record",
            Self::DuplicateRecord => "duplicate-record",
            Self::SwappedRecords => "swapped-records",
            Self::DuplicateOldChunk => "duplicate-old-chunk",
            Self::NewChunkBitFlip => "new-chunk-bit-flip",
            Self::OldChunkBitFlip => "old-chunk-bit-flip",
            Self::ByteSwappedNewChunk => "byte-swapped-new-chunk",
            Self::NewChunkUnallocated => "new-chunk-unallocated",
        }
    }
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mutated image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutant {
    /// The base it derives from.
    pub base: &'static str,
    /// The kind of mutation.
    pub kind: Mutation,
    /// What exactly changed.
    pub what: String,
    /// The chunk size of the table it is loaded with (sectors, 0 for the
    /// default); for a store with a header the on-disk one wins.
    pub table_chunk: u32,
    /// The image, whole sectors.
    pub bytes: Vec<u8>,
}

impl fmt::Display for Mutant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} (table chunk {})",
            self.base, self.kind, self.what, self.table_chunk
        )
    }
}

fn flip_bits(image: &mut [u8], start: usize, span: usize, count: u64, rng: &mut Rng) -> String {
    let mut bits = Vec::new();
    for _ in 0..count {
        let bit = rng.below((span * 8) as u64) as usize;
        image[start + bit / 8] ^= 1 << (bit % 8);
        bits.push((start * 8 + bit).to_string());
    }
    format!("bits {} flipped", bits.join(","))
}

/// Changes a field of the header of `image`, re-encoded by the format core
/// (the bytes after the header are left alone).
fn set_header(image: &mut [u8], edit: impl FnOnce(&mut DiskHeader)) {
    let bytes = &mut image[..DISK_HEADER_SIZE];
    // The header of a base always decodes and encodes: it is whole.
    if let Ok(mut header) = DiskHeader::decode(bytes) {
        edit(&mut header);
        let _ = header.encode(bytes);
    }
}

/// Chunk sizes (sectors) a [`Mutation::ChunkSizeField`] writes: refused by
/// the chunk-size rules (0, not a power of two, 2^22 and 2^31 too high),
/// the bases' own, others that move the areas, and sizes the rules allow
/// but no device here can hold (32 MiB to 1 GiB: the store must refuse them
/// before allocating chunk-sized buffers).
const CHUNK_SIZE_FIELDS: [u32; 18] = [
    0, 1, 2, 3, 4, 6, 8, 16, 96, 128, 1024, 4096, 65536, 1048576, 2097152, 4194304, 2147483648,
    4294967295,
];

/// The metadata areas that lie on a base's device.
fn device_areas(base: &Base) -> u64 {
    let sectors = base.chunks() * u64::from(base.layout.chunk_sectors());
    base.layout.device_areas(sectors)
}

/// One mutant of `base` of kind `kind`.
fn mutate(base: &Base, kind: Mutation, rng: &mut Rng) -> Mutant {
    let mut bytes = base.image.clone();
    let cb = base.chunk_bytes();
    let epa = base.layout.exceptions_per_area();
    let last_area = base.areas_used() - 1;
    let k = rng.below(u64::from(base.exceptions)) as u32;
    let (area, index) = base.place(k);
    let at = |b: &Base, a: u64| b.area_offset(a).unwrap_or(0);
    let record = |bytes: &mut Vec<u8>, e: Exception| {
        // Every record of a base lies in the image.
        let _ = base.write_record(bytes, k, e);
        format!(
            "exception {index} of area {area} := {}/{}",
            e.old_chunk, e.new_chunk
        )
    };
    let old = base.record(&bytes, k).unwrap_or_default();
    let what = match kind {
        Mutation::HeaderBitFlip => {
            flip_bits(&mut bytes, 0, DISK_HEADER_SIZE, 1 + rng.below(3), rng)
        }
        Mutation::AreaBitFlip => {
            let a = rng.below(last_area + 1);
            let used = if a < last_area {
                epa
            } else {
                epa.min(base.exceptions % epa + 1)
            };
            // Mostly in the records in use and the end marker, sometimes
            // anywhere in the area (after the end marker: garbage).
            let span = if rng.below(4) == 0 {
                cb
            } else {
                cb.min(used as usize * DISK_EXCEPTION_SIZE)
            };
            let n = 1 + rng.below(4);
            format!(
                "area {a}: {}",
                flip_bits(&mut bytes, at(base, a), span, n, rng)
            )
        }
        Mutation::Truncation => {
            let last = at(base, last_area);
            let len = match rng.below(4) {
                0 => last + rng.below(cb as u64) as usize,
                1 => last,
                2 => cb + rng.below((bytes.len() - cb) as u64) as usize,
                _ => SECTOR + rng.below(8 * SECTOR as u64) as usize,
            };
            let len = (len / SECTOR * SECTOR).max(SECTOR);
            bytes.truncate(len);
            format!("truncated to {len} bytes")
        }
        Mutation::SwappedAreas => {
            let areas = device_areas(base);
            let a = rng.below(areas);
            let b = (a + 1 + rng.below(areas - 1)) % areas;
            let (x, y) = (at(base, a.min(b)), at(base, a.max(b)));
            let (head, tail) = bytes.split_at_mut(y);
            head[x..x + cb].swap_with_slice(&mut tail[..cb]);
            format!("areas {a} and {b} swapped")
        }
        Mutation::NewChunkBeyondEnd => {
            let end = base.chunks();
            let past = end + 1 + rng.below(1000);
            let new_chunk = rng.pick(&[end, past, 1 << 56, 1 << 63, u64::MAX]);
            record(&mut bytes, Exception { new_chunk, ..old })
        }
        Mutation::NewChunkAtMetadata => {
            let new_chunk = match rng.below(5) {
                0 => 0,
                _ => base
                    .layout
                    .area_location(rng.below(device_areas(base)))
                    .unwrap_or(1),
            };
            record(&mut bytes, Exception { new_chunk, ..old })
        }
        Mutation::ChunkSizeField => {
            let v = rng.pick(&CHUNK_SIZE_FIELDS);
            set_header(&mut bytes, |h| h.chunk_size = v);
            format!("chunk size {v}")
        }
        Mutation::OldChunkTooLarge => {
            let max = base.layout.max_old_chunk();
            let old_chunk = rng.pick(&[max, max + 1, 1 << 56, u64::MAX]);
            record(&mut bytes, Exception { old_chunk, ..old })
        }
        Mutation::DuplicateNewChunk => {
            let other = rng.below(u64::from(base.exceptions)) as u32;
            let new_chunk = base.record(&bytes, other).unwrap_or_default().new_chunk;
            record(&mut bytes, Exception { new_chunk, ..old })
        }
        Mutation::ValidField => {
            let v = rng.pick(&[0, 2, 0x100, u32::MAX]);
            set_header(&mut bytes, |h| h.valid = v);
            format!("valid {v}")
        }
        Mutation::MagicField => {
            let v = rng.pick(&[0, SNAP_MAGIC ^ 1, SNAP_MAGIC.swap_bytes(), u32::MAX]);
            set_header(&mut bytes, |h| h.magic = v);
            format!("magic {v:#x}")
        }
        Mutation::VersionField => {
            let v = rng.pick(&[0, 2, 0x100, u32::MAX]);
            set_header(&mut bytes, |h| h.version = v);
            format!("version {v}")
        }
        Mutation::ZeroedHeader => {
            bytes[..cb].fill(0);
            "header chunk zeroed".into()
        }
        Mutation::ZeroedArea => {
            let a = rng.below(last_area + 1);
            bytes[at(base, a)..at(base, a) + cb].fill(0);
            format!("area {a} zeroed")
        }
        Mutation::TornArea | Mutation::StaleSectors => {
            let a = rng.below(last_area + 1);
            let sectors = cb / SECTOR;
            // From sector 1 on in chunks of several sectors; a one-sector
            // chunk is torn at a record instead.
            let from = if sectors > 1 {
                (1 + rng.below(sectors as u64 - 1) as usize) * SECTOR
            } else {
                (1 + rng.below(u64::from(epa) - 1) as usize) * DISK_EXCEPTION_SIZE
            };
            let start = at(base, a);
            if kind == Mutation::TornArea {
                bytes[start + from..start + cb].fill(0);
                format!("area {a} zeroed from byte {from}")
            } else {
                let areas = device_areas(base);
                let b = (a + 1 + rng.below(areas - 1)) % areas;
                let other = at(base, b);
                let stale = base.image[other + from..other + cb].to_vec();
                bytes[start + from..start + cb].copy_from_slice(&stale);
                format!("area {a} from byte {from} taken from area {b}")
            }
        }
        Mutation::ZeroedSector => {
            let a = rng.below(last_area + 1);
            let s = rng.below((cb / SECTOR) as u64) as usize;
            let start = at(base, a) + s * SECTOR;
            bytes[start..start + SECTOR].fill(0);
            format!("area {a} sector {s} zeroed")
        }
        Mutation::RandomArea => {
            let a = rng.below(last_area + 1);
            rng.fill(&mut bytes[at(base, a)..at(base, a) + cb]);
            format!("area {a} random")
        }
        Mutation::CopiedArea => {
            let a = rng.below(last_area + 1);
            let b = (a + 1 + rng.below(last_area)) % (last_area + 1);
            let from = base.image[at(base, a)..at(base, a) + cb].to_vec();
            bytes[at(base, b)..at(base, b) + cb].copy_from_slice(&from);
            format!("area {a} copied over area {b}")
        }
        Mutation::ZeroedTail => {
            let from = (1 + rng.below(base.chunks() - 1) as usize) * cb;
            bytes[from..].fill(0);
            format!("zeroed from byte {from}")
        }
        Mutation::GarbageAfterEndMarker => {
            let end = base.exceptions % epa;
            let start = at(base, last_area) + (end as usize + 1) * DISK_EXCEPTION_SIZE;
            let len = (cb - (end as usize + 1) * DISK_EXCEPTION_SIZE).min(3 * DISK_EXCEPTION_SIZE);
            rng.fill(&mut bytes[start..start + len]);
            format!("{len} random bytes after the end marker of area {last_area}")
        }
        Mutation::StaleAreaAfterEnd => {
            let next = last_area + 1;
            if next < device_areas(base) {
                let from = base.image[at(base, 0)..at(base, 0) + cb].to_vec();
                bytes[at(base, next)..at(base, next) + cb].copy_from_slice(&from);
                format!("area 0 copied to area {next}")
            } else {
                "no area after the last (unchanged)".into()
            }
        }
        Mutation::EarlyEndMarker => record(
            &mut bytes,
            Exception {
                new_chunk: 0,
                ..old
            },
        ),
        Mutation::ZeroedRecord => record(&mut bytes, Exception::default()),
        Mutation::AllOnesRecord => record(
            &mut bytes,
            Exception {
                old_chunk: u64::MAX,
                new_chunk: u64::MAX,
            },
        ),
        Mutation::DuplicateRecord | Mutation::SwappedRecords => {
            let j = (k + 1) % base.exceptions;
            let next = base.record(&bytes, j).unwrap_or_default();
            let _ = base.write_record(&mut bytes, j, old);
            if kind == Mutation::SwappedRecords {
                let _ = base.write_record(&mut bytes, k, next);
                format!("exceptions {k} and {j} swapped")
            } else {
                format!("exception {k} copied over exception {j}")
            }
        }
        Mutation::DuplicateOldChunk => {
            let other = rng.below(u64::from(base.exceptions)) as u32;
            let old_chunk = base.record(&bytes, other).unwrap_or_default().old_chunk;
            record(&mut bytes, Exception { old_chunk, ..old })
        }
        Mutation::NewChunkBitFlip => {
            let new_chunk = old.new_chunk ^ (1 << rng.below(64));
            record(&mut bytes, Exception { new_chunk, ..old })
        }
        Mutation::OldChunkBitFlip => {
            let old_chunk = old.old_chunk ^ (1 << rng.below(48));
            record(&mut bytes, Exception { old_chunk, ..old })
        }
        Mutation::ByteSwappedNewChunk => {
            let new_chunk = old.new_chunk.swap_bytes();
            record(&mut bytes, Exception { new_chunk, ..old })
        }
        Mutation::NewChunkUnallocated => {
            let used = base.last_new_chunk();
            let free: Vec<u64> = (used + 1..base.chunks())
                .filter(|&c| base.layout.is_data_chunk(c))
                .collect();
            let new_chunk = if free.is_empty() {
                old.new_chunk
            } else {
                rng.pick(&free)
            };
            record(&mut bytes, Exception { new_chunk, ..old })
        }
    };
    let table_chunk = match rng.below(6) {
        0..=2 => base.layout.chunk_sectors(),
        3 => 0,
        4 => 1,
        _ => 8,
    };
    Mutant {
        base: base.name,
        kind,
        what,
        table_chunk,
        bytes,
    }
}

/// `n` mutants of `bases`, the same for the same seed: the kinds in turn
/// ([`Mutation::ALL`]), each round of kinds on the next base.
pub fn mutants(bases: &[Base], n: usize, seed: u64) -> Vec<Mutant> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    if bases.is_empty() {
        return out;
    }
    let kinds = Mutation::ALL.len();
    for i in 0..n {
        let base = &bases[(i / kinds) % bases.len()];
        out.push(mutate(base, Mutation::ALL[i % kinds], &mut rng));
    }
    out
}

/// Kinds of damage of which at least one mutant must be repaired and the
/// repaired store loaded: all but the header's magic, version, zeroed
/// header and bit flips, which leave no chunk size to find the areas with
/// (a flip in the `valid` field or a chunk-size change the rules allow can
/// still leave a usable header).
pub const MIN_REPAIRED_KINDS: usize = Mutation::ALL.len() - 4;

/// The store `snap_dump --repair --salvage-invalid` and `snap_restore
/// --force` make of a damaged `image`, in place, with the number of
/// exceptions kept; `None` when nothing can be salvaged.
///
/// # Errors
///
/// The restore's error: a repaired dump must always restore.
pub fn repaired(image: &[u8]) -> io::Result<Option<(Vec<u8>, u64)>> {
    let io = MemIo::new(image.to_vec());
    let opts = RepairOptions {
        salvage_invalid: true,
        ..RepairOptions::default()
    };
    let mut dump = Vec::new();
    let Ok(summary) = repair(&io, &opts, &mut dump, &mut Progress::silent(), |_| {}) else {
        return Ok(None);
    };
    Ok(Some((write_back(io.data, &dump)?, summary.kept)))
}

/// `image` with `dump` written over it by `snap_restore --force`: in
/// place, as a repair is written back (the data chunks stay).
///
/// # Errors
///
/// The restore's error.
pub fn write_back(image: Vec<u8>, dump: &[u8]) -> io::Result<Vec<u8>> {
    let mut target = MemIo::new(image);
    let ro = RestoreOptions {
        force: true,
        ..RestoreOptions::default()
    };
    restore(|| Ok(dump), &mut target, &ro, &mut Progress::silent())
        .map_err(|e| io::Error::other(format!("restoring the repaired dump: {e}")))?;
    Ok(target.data)
}

/// What the format core says the store must do with an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Refuse it (the table load fails), for this reason.
    Refused(String),
    /// Start a new store: write it, and show this status.
    NewStore {
        /// The status line's usage figures (`a/b m`).
        status: String,
    },
    /// Load the snapshot as invalid, writing nothing.
    Invalid,
    /// Load the store.
    Valid {
        /// Exceptions it holds.
        exceptions: u64,
        /// The status line's usage figures (`a/b m`).
        status: String,
        /// Whether it holds records after the end marker, which the store
        /// clears on disk at its first commit (not at activation).
        cleanup: bool,
    },
}

impl Expected {
    /// Whether loading the image writes to it: only for a new store.
    /// Activation writes nothing to a valid store, as C; garbage after
    /// the end marker goes back to disk with the first commit.
    pub fn writes(&self) -> bool {
        match self {
            Self::NewStore { .. } => true,
            Self::Valid { .. } | Self::Refused(_) | Self::Invalid => false,
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(why) => write!(f, "refused ({why})"),
            Self::NewStore { status } => write!(f, "new store, status {status}"),
            Self::Invalid => f.write_str("invalid"),
            Self::Valid {
                exceptions,
                status,
                cleanup,
            } => {
                write!(f, "valid, {exceptions} exceptions, status {status}")?;
                if *cleanup {
                    f.write_str(", garbage after the end marker")?;
                }
                Ok(())
            }
        }
    }
}

/// The usage figures as the snapshot's status line prints them.
pub fn status_line(u: &Usage) -> String {
    format!(
        "{}/{} {}",
        u.sectors_allocated, u.total_sectors, u.metadata_sectors
    )
}

fn usage_status(layout: Layout, next_free: u64, area: u64, cow_sectors: u64) -> io::Result<String> {
    layout
        .usage(next_free, area, cow_sectors)
        .map(|u| status_line(&u))
        .ok_or_else(|| io::Error::other("usage figures overflow"))
}

/// The format core's verdict on `image` loaded with a table chunk size of
/// `table_chunk` sectors (0: the default), on 512-byte block devices.
///
/// [`check`]'s verdict, completed with what it leaves to the caller: the
/// header is read with a chunk of the table's size, which must lie on the
/// device; a new store zeroes area 0, which must lie on the device too; the
/// store refuses two exceptions sharing a `new_chunk` (a problem `check`
/// reports without refusing).
///
/// # Errors
///
/// An error of `check` (none is expected on an in-memory image).
pub fn expect(image: &[u8], table_chunk: u32) -> io::Result<Expected> {
    let blocks = BlockSizes::SECTOR;
    let cow_sectors = (image.len() / SECTOR) as u64;
    let table =
        match TableChunkSize::new(table_chunk, blocks).and_then(|t| t.check_device(cow_sectors)) {
            Ok(t) => t,
            Err(e) => return Ok(Expected::Refused(e.to_string())),
        };
    let mut duplicate = None;
    let opts = CheckOptions {
        blocks,
        ..CheckOptions::default()
    };
    let summary = check(
        &MemIo::new(image.to_vec()),
        &opts,
        &mut Progress::silent(),
        |p| {
            if p.kind == ProblemKind::DuplicateNewChunk && duplicate.is_none() {
                duplicate = Some(p.message.clone());
            }
        },
    )?;
    Ok(match summary.verdict {
        Verdict::Refused(why) => Expected::Refused(why),
        Verdict::Invalid => Expected::Invalid,
        Verdict::NewStore => {
            let layout = read_header(image, table, blocks, |_| {})
                .map_err(|e| io::Error::other(e.to_string()))?
                .layout();
            match layout.area_io(0) {
                Some(a) if a.chunk < layout.device_chunks(cow_sectors) => Expected::NewStore {
                    status: usage_status(layout, INITIAL_NEXT_FREE, 0, cow_sectors)?,
                },
                _ => Expected::Refused(format!(
                    "area 0 of a new store with {}-sector chunks lies beyond the device",
                    layout.chunk_sectors()
                )),
            }
        }
        Verdict::Valid(scan) => match (duplicate, summary.layout) {
            (Some(why), _) => Expected::Refused(why),
            (None, Some(layout)) => Expected::Valid {
                exceptions: scan.exceptions,
                status: usage_status(layout, scan.next_free, scan.current_area, cow_sectors)?,
                cleanup: scan.warning.is_some(),
            },
            (None, None) => return Err(io::Error::other("a valid store without a layout")),
        },
        Verdict::HeaderValid => return Err(io::Error::other("a header-only check")),
    })
}

/// What the kernel did with the table load of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The load succeeded; the status line after the resume (or the error
    /// of the resume or status, in parentheses).
    Accepted(String),
    /// The load failed with this errno.
    Refused(i32),
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Accepted(status) => write!(f, "accepted, status {status}"),
            Self::Refused(errno) => {
                write!(f, "refused: {}", io::Error::from_raw_os_error(*errno))
            }
        }
    }
}

/// What happened to an image in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The table load's outcome.
    pub kernel: Kernel,
    /// Whether the COW device changed between before the load and after
    /// the snapshot was removed.
    pub written: bool,
}

/// The violations of what the format core expects in what was observed,
/// one line each (none: the kernel did what it must).
///
/// The kernel must refuse exactly the images the format core refuses, and
/// write nothing to them; must show a snapshot marked invalid as
/// `Invalid`; must show the usage figures of a new or valid store; and
/// must write to an image it loads only to start a new store or to clear
/// records after an end marker.
pub fn judge(expected: &Expected, seen: &Observed) -> Vec<String> {
    let mut v = Vec::new();
    match (expected, &seen.kernel) {
        (Expected::Refused(why), Kernel::Accepted(status)) => v.push(format!(
            "accepted an image the format core rejects ({why}); status {status}"
        )),
        (Expected::Refused(_), Kernel::Refused(_)) => {}
        (e, Kernel::Refused(_)) => v.push(format!(
            "{}, but the format core accepts it: {e}",
            seen.kernel
        )),
        (Expected::Invalid, Kernel::Accepted(status)) => {
            if status != "Invalid" {
                v.push(format!(
                    "status {status}, but the header marks the snapshot invalid"
                ));
            }
        }
        (
            Expected::NewStore { status: want } | Expected::Valid { status: want, .. },
            Kernel::Accepted(status),
        ) => {
            if status != want {
                v.push(format!(
                    "status {status}, the format core expects {want} ({expected})"
                ));
            }
        }
    }
    match (&seen.kernel, seen.written, expected.writes()) {
        (Kernel::Refused(_), true, _) => v.push("wrote to a refused image".into()),
        (Kernel::Accepted(_), true, false) => v.push(format!(
            "wrote to an image it had only to read ({expected})"
        )),
        (Kernel::Accepted(_), false, true) => v.push(format!(
            "wrote nothing, but the format core expects writes ({expected})"
        )),
        _ => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeSet;

    fn all_mutants() -> Vec<Mutant> {
        mutants(&bases().unwrap(), DEFAULT_MUTANTS, 1)
    }

    #[test]
    fn bases_are_valid_stores_over_two_areas_or_more() {
        for b in bases().unwrap() {
            assert!(b.areas_used() >= 2, "{}", b.name);
            let e = expect(&b.image, b.layout.chunk_sectors()).unwrap();
            match e {
                Expected::Valid {
                    exceptions,
                    cleanup: false,
                    ..
                } => assert_eq!(exceptions, u64::from(b.exceptions), "{}", b.name),
                other => panic!("{}: {other}", b.name),
            }
            // The on-disk chunk size wins over the table's.
            assert_eq!(expect(&b.image, 0).unwrap(), e, "{}", b.name);
        }
    }

    #[test]
    fn the_generator_is_deterministic() {
        let b = bases().unwrap();
        assert_eq!(mutants(&b, 50, 7), mutants(&b, 50, 7));
        assert_ne!(mutants(&b, 50, 7), mutants(&b, 50, 8));
    }

    #[test]
    fn the_default_run_has_every_kind_on_every_base_in_whole_sectors() {
        let m = all_mutants();
        assert!(m.len() >= MIN_MUTANTS);
        let pairs: BTreeSet<_> = m.iter().map(|m| (m.kind, m.base)).collect();
        assert_eq!(pairs.len(), Mutation::ALL.len() * bases().unwrap().len());
        for x in &m {
            assert!(
                !x.bytes.is_empty() && x.bytes.len().is_multiple_of(SECTOR),
                "{x}"
            );
        }
    }

    #[test]
    fn mutants_give_every_verdict() {
        let mut seen = BTreeSet::new();
        let mut refused = 0;
        for m in all_mutants() {
            let e = expect(&m.bytes, m.table_chunk).unwrap();
            refused += usize::from(matches!(e, Expected::Refused(_)));
            seen.insert(match e {
                Expected::Refused(_) => "refused",
                Expected::NewStore { .. } => "new",
                Expected::Invalid => "invalid",
                Expected::Valid { cleanup: false, .. } => "valid",
                Expected::Valid { cleanup: true, .. } => "valid-cleanup",
            });
        }
        assert!(seen.is_superset(&["refused", "invalid", "valid", "valid-cleanup"].into()));
        assert!(
            refused > DEFAULT_MUTANTS / 3 && refused < DEFAULT_MUTANTS,
            "{refused}"
        );
    }

    #[test]
    fn the_default_run_repairs_enough_kinds_into_stores_the_core_loads() {
        let mut kinds = BTreeSet::new();
        for m in all_mutants() {
            if let Some((image, kept)) = repaired(&m.bytes).unwrap() {
                kinds.insert(m.kind);
                let chunk = bases()
                    .unwrap()
                    .iter()
                    .find(|b| b.name == m.base)
                    .unwrap()
                    .layout
                    .chunk_sectors();
                match expect(&image, chunk).unwrap() {
                    Expected::Valid {
                        exceptions,
                        cleanup: false,
                        ..
                    } => assert_eq!(exceptions, kept, "{m}"),
                    other => panic!("{m}: {other}"),
                }
            }
        }
        assert!(kinds.len() >= MIN_REPAIRED_KINDS, "{kinds:?}");
    }

    fn one(kind: Mutation, base: usize) -> Mutant {
        let b = bases().unwrap();
        let mut rng = Rng::new(3);
        mutate(&b[base], kind, &mut rng)
    }

    #[test]
    fn records_out_of_place_are_refused() {
        for kind in [Mutation::NewChunkBeyondEnd, Mutation::DuplicateNewChunk] {
            for base in 0..3 {
                let m = one(kind, base);
                let e = expect(&m.bytes, m.table_chunk).unwrap();
                // A record duplicating itself changes nothing.
                if !(kind == Mutation::DuplicateNewChunk && matches!(e, Expected::Valid { .. })) {
                    assert!(matches!(e, Expected::Refused(_)), "{m}: {e}");
                }
            }
        }
    }

    #[test]
    fn size_rules_the_check_leaves_out_are_applied() {
        let b = &bases().unwrap()[1];
        // The header is read with the table's chunk: 16 KiB by default.
        let small = &b.image[..8 * SECTOR];
        let why = |e| match e {
            Expected::Refused(why) => why,
            other => panic!("{other}"),
        };
        assert!(why(expect(small, 0).unwrap()).contains("smaller than one chunk"));
        assert!(why(expect(small, 2).unwrap()).contains("beyond the end"));
        // A new store needs area 0 on the device.
        let zeros = vec![0u8; 2 * SECTOR];
        assert!(matches!(expect(&zeros, 2).unwrap(), Expected::Refused(_)));
        assert_eq!(
            expect(&zeros, 1).unwrap(),
            Expected::NewStore {
                status: "2/2 2".into()
            }
        );
    }

    #[test]
    fn corpus_inputs_split_into_table_chunk_and_whole_sectors() {
        assert_eq!(corpus_image(&[]), None);
        let (t, img) = corpus_image(&[0x06, 1, 2, 3]).unwrap();
        assert_eq!((t, img.len(), &img[..3]), (4, SECTOR, &[1u8, 2, 3][..]));
        let (t, img) = corpus_image(&[0x03; 1026]).unwrap();
        assert_eq!((t, img.len()), (0, 3 * SECTOR));
    }

    fn seen(kernel: Kernel, written: bool) -> Observed {
        Observed { kernel, written }
    }

    #[test]
    fn the_comparison_flags_each_violation() {
        let refused = Expected::Refused("bad".into());
        let valid = Expected::Valid {
            exceptions: 3,
            status: "16/200 16".into(),
            cleanup: false,
        };
        let new = Expected::NewStore {
            status: "2/8 2".into(),
        };
        let ok = |e: &Expected, o: Observed| assert_eq!(judge(e, &o), Vec::<String>::new());
        let bad = |e: &Expected, o: Observed, what: &str| {
            let v = judge(e, &o);
            assert!(v.iter().any(|l| l.contains(what)), "{v:?} lacks {what}");
        };
        ok(&refused, seen(Kernel::Refused(22), false));
        ok(&valid, seen(Kernel::Accepted("16/200 16".into()), false));
        ok(&new, seen(Kernel::Accepted("2/8 2".into()), true));
        ok(
            &Expected::Invalid,
            seen(Kernel::Accepted("Invalid".into()), false),
        );
        bad(
            &refused,
            seen(Kernel::Accepted("2/8 2".into()), true),
            "accepted an image",
        );
        bad(
            &valid,
            seen(Kernel::Refused(5), false),
            "the format core accepts it",
        );
        bad(
            &refused,
            seen(Kernel::Refused(5), true),
            "wrote to a refused image",
        );
        bad(
            &Expected::Invalid,
            seen(Kernel::Accepted("2/8 2".into()), false),
            "marks the snapshot invalid",
        );
        bad(
            &valid,
            seen(Kernel::Accepted("Invalid".into()), false),
            "status Invalid",
        );
        bad(
            &valid,
            seen(Kernel::Accepted("24/200 16".into()), false),
            "expects 16/200 16",
        );
        bad(
            &valid,
            seen(Kernel::Accepted("16/200 16".into()), true),
            "only to read",
        );
        bad(
            &new,
            seen(Kernel::Accepted("2/8 2".into()), false),
            "wrote nothing",
        );
    }
}
