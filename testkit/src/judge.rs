// SPDX-License-Identifier: GPL-2.0-only

//! The format-level judgement of a crash state, without a kernel.
//!
//! The oracle of the crash points ([`crate::oracle`]) applied to what an
//! activation of the store would show over the state's images, computed on
//! the host:
//!
//! 1. The COW image passes `snap_check` (the tools' library) with no error
//!    and no warning, apart from the notes that the device holds no store
//!    yet or a store marked invalid. Anything else, an unreadable header
//!    or metadata included, loses the state.
//! 2. A header marked invalid (`valid` 0) is judged [`Judgement::Invalid`]:
//!    the snapshot loads invalid, which a crash may leave.
//! 3. Otherwise the format core's activation [`Scan`] over the in-memory
//!    areas gives the exceptions; the snapshot's view is the origin with
//!    each excepted chunk read from the COW device (no store yet: the
//!    origin), and every block of it must be what the oracle accepts.
//!
//! [`Judge`] keeps its buffers from one state to the next and reads the
//! images in place: no view is built, a block is compared where it lies.
//! Given reference images ([`Judge::set_reference`]) and what a state
//! changed on top of them, [`Judge::judge_over`] compares only the blocks
//! of the view that can differ from the reference's (the blocks those
//! writes cover, through the exceptions of either), the blocks written
//! through the snapshot, and those the oracle refused in the reference; it
//! reads the metadata again only if the writes touch it. A block read from
//! the same bytes in both views gets the same verdict: the oracle's verdict
//! on a block not written through the snapshot does not depend on the
//! state.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::io;

use snap_format::AreaFill;
use snap_format::BlockSizes;
use snap_format::Layout;
use snap_format::Scan;
use snap_format::ScanStop;
use snap_format::Stopped;
use snap_format::SECTOR_SIZE;
use snap_tools::check::check;
use snap_tools::check::CheckOptions;
use snap_tools::check::Kind as ProblemKind;
use snap_tools::check::Verdict;
use snap_tools::header::HEADER_READ_BYTES;
use snap_tools::io::BlockIo;
use snap_tools::progress::Progress;

use crate::oracle::Cut;
use crate::oracle::Oracle;
use crate::replay::Slice;
use crate::tag::BLOCK;

/// A COW image in memory, read-only, for `snap_check`.
pub struct SliceIo<'a>(pub &'a [u8]);

impl BlockIo for SliceIo<'_> {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let s = usize::try_from(offset).map_err(io::Error::other)?;
        let src = s
            .checked_add(buf.len())
            .and_then(|end| self.0.get(s..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(io::Error::other("read-only"))
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The verdict on a crash state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// The snapshot shows what it must.
    Good,
    /// The header marks the snapshot invalid: it loads invalid.
    Invalid,
    /// The state lost data or its metadata: why.
    Lost(String),
}

impl Judgement {
    /// Whether the state is lost.
    pub fn is_lost(&self) -> bool {
        matches!(self, Self::Lost(_))
    }
}

/// Bytes a state's own writes changed on top of its reference images
/// (see [`Judge::judge_over`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The slice written.
    pub slice: Slice,
    /// Byte offset in the slice.
    pub at: usize,
    /// Length in bytes.
    pub len: usize,
}

impl Written {
    fn overlaps(&self, start: usize, end: usize) -> bool {
        self.at < end && start < self.at.saturating_add(self.len)
    }
}

/// Where a block of the snapshot's view is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The origin, at the block's own offset.
    Origin,
    /// The COW device, from this byte offset.
    Cow(usize),
    /// Several chunks (chunks smaller than a block).
    Mixed,
}

/// Reference images that states are judged over: the verdict on each
/// block of their view, and the metadata they were read with.
struct Reference {
    /// The caller's name for the images.
    key: usize,
    chunk: usize,
    remap: Vec<Option<u64>>,
    sources: Vec<Source>,
    /// Blocks the oracle refuses (blocks written through the snapshot,
    /// whose verdict depends on the state, are always checked again).
    bad: Vec<bool>,
    /// The COW byte ranges the metadata was read from, when it was that of
    /// a store the oracle can look at (valid, or none yet).
    metadata: Option<Vec<(usize, usize)>>,
}

/// Judges crash states at the format level, reusing its buffers.
pub struct Judge {
    opts: CheckOptions,
    /// Chunk size of the last images loaded, in bytes.
    chunk: usize,
    /// The COW chunk of each origin chunk, in the last images loaded.
    remap: Vec<Option<u64>>,
    /// The metadata areas read from them.
    areas: Vec<u64>,
    /// Where each block of their view is read from.
    sources: Vec<Source>,
    /// The blocks to check.
    dirty: Vec<usize>,
    /// Blocks of the origin a state's writes touched.
    origin_touched: Vec<bool>,
    /// Sectors of the COW device a state's writes touched, a bit each.
    cow_touched: Vec<u64>,
    /// A view block put together from chunks smaller than a block.
    scratch: Vec<u8>,
    reference: Option<Reference>,
}

impl Judge {
    /// A judge of COW devices with these logical block sizes.
    pub fn new(blocks: BlockSizes) -> Self {
        Self {
            opts: CheckOptions {
                blocks,
                ..CheckOptions::default()
            },
            chunk: BLOCK,
            remap: Vec::new(),
            areas: Vec::new(),
            sources: Vec::new(),
            dirty: Vec::new(),
            origin_touched: Vec::new(),
            cow_touched: Vec::new(),
            scratch: Vec::with_capacity(BLOCK),
            reference: None,
        }
    }

    /// Judges the state with these images against `oracle`, `cut` saying
    /// what the state holds: every block of the view is checked.
    pub fn judge(
        &mut self,
        oracle: &Oracle,
        cut: &Cut<'_>,
        origin: &[u8],
        cow: &[u8],
    ) -> Judgement {
        if let Err(j) = self.load(origin.len(), cow) {
            return j;
        }
        self.dirty.clear();
        self.dirty.extend(0..self.sources.len());
        self.check_dirty(oracle, cut, origin, cow)
    }

    /// Whether the reference images are those named `key`.
    pub fn has_reference(&self, key: usize) -> bool {
        self.reference.as_ref().is_some_and(|r| r.key == key)
    }

    /// Takes these images, named `key`, as the reference of
    /// [`Judge::judge_over`]: the verdict on each block of their view is
    /// kept (the oracle must be the same in later calls).
    pub fn set_reference(&mut self, key: usize, oracle: &Oracle, origin: &[u8], cow: &[u8]) {
        self.reference = None;
        let metadata = match self.load(origin.len(), cow) {
            Ok(Some(_)) => {
                let chunk = self.chunk;
                let areas = self.areas.iter().filter_map(|&a| {
                    let start = usize::try_from(a).ok()?.checked_mul(chunk)?;
                    Some((start, start.checked_add(chunk)?))
                });
                let header = (0, HEADER_READ_BYTES.max(chunk));
                Some(std::iter::once(header).chain(areas).collect())
            }
            Ok(None) => Some(vec![(0, HEADER_READ_BYTES)]),
            Err(_) => {
                // Unusable metadata: the view over the bare origin serves
                // as the reference; every state re-reads its own metadata.
                self.chunk = BLOCK;
                self.remap.clear();
                self.fill_sources(origin.len());
                None
            }
        };
        let any = |_: usize| false;
        let cut = Cut {
            acked_by: 0,
            holds: &any,
        };
        let view = View {
            remap: &self.remap,
            chunk: self.chunk,
            origin,
            cow,
        };
        let mut bad = vec![false; self.sources.len()];
        for (b, is_bad) in bad.iter_mut().enumerate() {
            let offset = b * BLOCK;
            if self.sources[b] == Source::Mixed || oracle.written(offset as u64) {
                continue;
            }
            let len = BLOCK.min(origin.len() - offset);
            *is_bad = match view.block(offset, len, &mut self.scratch) {
                Some(got) => oracle.check_block(&cut, offset as u64, got).is_err(),
                None => true,
            };
        }
        self.reference = Some(Reference {
            key,
            chunk: self.chunk,
            remap: self.remap.clone(),
            sources: self.sources.clone(),
            bad,
            metadata,
        });
    }

    /// Judges the state with these images, which are the reference images
    /// named `key` changed by `written` only, as [`Judge::judge`] would,
    /// checking only the blocks of the view that `written` or a change of
    /// the exceptions can change, those written through the snapshot, and
    /// those the oracle refused in the reference. The metadata is read
    /// again only if `written` touches it. Without that reference, every
    /// block is checked.
    pub fn judge_over(
        &mut self,
        key: usize,
        oracle: &Oracle,
        cut: &Cut<'_>,
        origin: &[u8],
        cow: &[u8],
        written: &[Written],
    ) -> Judgement {
        let Some(r) = self.reference.take_if(|r| r.key == key) else {
            return self.judge(oracle, cut, origin, cow);
        };
        let j = self.judge_against(&r, oracle, cut, origin, cow, written);
        self.reference = Some(r);
        j
    }

    fn judge_against(
        &mut self,
        r: &Reference,
        oracle: &Oracle,
        cut: &Cut<'_>,
        origin: &[u8],
        cow: &[u8],
        written: &[Written],
    ) -> Judgement {
        let same_metadata = r.metadata.as_ref().is_some_and(|ranges| {
            !written
                .iter()
                .any(|w| w.slice == Slice::Cow && ranges.iter().any(|&(s, e)| w.overlaps(s, e)))
        });
        if same_metadata {
            self.chunk = r.chunk;
            self.remap.clone_from(&r.remap);
            self.sources.clone_from(&r.sources);
        } else if let Err(j) = self.load(origin.len(), cow) {
            return j;
        }
        self.touch(written, origin.len(), cow.len());
        self.dirty.clear();
        for (b, &src) in self.sources.iter().enumerate() {
            let changed = r.sources.get(b) != Some(&src)
                || r.bad.get(b).copied().unwrap_or(true)
                || oracle.written((b * BLOCK) as u64)
                || self.touched(b, src);
            if changed {
                self.dirty.push(b);
            }
        }
        self.check_dirty(oracle, cut, origin, cow)
    }

    /// Reads the metadata of `cow` for an origin of `origin_len` bytes:
    /// `snap_check`, then the activation scan, which set the chunk size,
    /// the exceptions and the sources of the view. The layout of a valid
    /// store, `None` for no store yet, or the judgement if it ends here.
    fn load(&mut self, origin_len: usize, cow: &[u8]) -> Result<Option<Layout>, Judgement> {
        self.remap.clear();
        self.areas.clear();
        self.chunk = BLOCK;
        let layout = self.metadata(cow)?;
        if let Some(layout) = layout {
            self.chunk = layout.chunk_bytes() as usize;
            self.scan(layout, origin_len, cow)
                .map_err(Judgement::Lost)?;
        }
        self.fill_sources(origin_len);
        Ok(layout)
    }

    /// `snap_check` on the COW image: the layout of a valid store, `None`
    /// for no store yet, or the judgement if it ends here.
    fn metadata(&self, cow: &[u8]) -> Result<Option<Layout>, Judgement> {
        let mut problems = Vec::new();
        let summary = check(&SliceIo(cow), &self.opts, &mut Progress::silent(), |pr| {
            if !matches!(pr.kind, ProblemKind::SnapshotInvalid | ProblemKind::NoStore) {
                problems.push(pr.to_string());
            }
        })
        .map_err(|e| Judgement::Lost(format!("snap_check cannot read the image: {e}")))?;
        if !problems.is_empty() {
            return Err(Judgement::Lost(format!(
                "snap_check: {}",
                problems.join("; ")
            )));
        }
        match (summary.verdict, summary.layout) {
            (Verdict::NewStore, _) => Ok(None),
            (Verdict::Invalid, _) => Err(Judgement::Invalid),
            (Verdict::Valid(_), Some(layout)) => Ok(Some(layout)),
            (Verdict::Refused(why), _) => Err(Judgement::Lost(format!("refused: {why}"))),
            (v, _) => Err(Judgement::Lost(format!("unexpected verdict {v:?}"))),
        }
    }

    /// The activation scan over the areas in place; fills `remap` for an
    /// origin of `origin_len` bytes and `areas`.
    fn scan(&mut self, layout: Layout, origin_len: usize, cow: &[u8]) -> Result<(), String> {
        let chunk = layout.chunk_bytes() as usize;
        self.remap.resize(origin_len.div_ceil(chunk), None);
        let mut scan = Scan::new(layout, cow.len() as u64 / u64::from(SECTOR_SIZE));
        loop {
            let aio = scan.next_area().map_err(|e| e.to_string())?;
            self.areas.push(aio.chunk);
            let area = chunk_at(cow, aio.chunk, chunk)
                .ok_or_else(|| format!("area {} lies beyond the image", aio.area))?;
            let remap = &mut self.remap;
            let fill = scan
                .scan_area(area, |e| {
                    let slot = usize::try_from(e.old_chunk)
                        .ok()
                        .and_then(|c| remap.get_mut(c));
                    if let Some(slot) = slot {
                        *slot = Some(e.new_chunk);
                    }
                    Ok::<(), Infallible>(())
                })
                .map_err(|stopped: Stopped<ScanStop<Infallible>>| {
                    stopped.stop.into_format().to_string()
                })?;
            match fill {
                AreaFill::Full(next) => scan = next,
                AreaFill::Partial(_) => return Ok(()),
            }
        }
    }

    /// Where each block of the view of an origin of `origin_len` bytes is
    /// read from, by `chunk` and `remap`.
    fn fill_sources(&mut self, origin_len: usize) {
        self.sources.clear();
        let mut offset = 0;
        while offset < origin_len {
            let len = BLOCK.min(origin_len - offset);
            let within = offset % self.chunk;
            let src = if within + len > self.chunk {
                Source::Mixed
            } else {
                match self.remap.get(offset / self.chunk).copied().flatten() {
                    None => Source::Origin,
                    Some(new) => usize::try_from(new)
                        .ok()
                        .and_then(|n| n.checked_mul(self.chunk)?.checked_add(within))
                        .map_or(Source::Mixed, Source::Cow),
                }
            };
            self.sources.push(src);
            offset += len;
        }
    }

    /// Marks the blocks of the origin and the sectors of the COW device
    /// that `written` covers.
    fn touch(&mut self, written: &[Written], origin_len: usize, cow_len: usize) {
        self.origin_touched.clear();
        self.origin_touched
            .resize(origin_len.div_ceil(BLOCK), false);
        self.cow_touched.clear();
        self.cow_touched
            .resize((cow_len / SECTOR).div_ceil(64) + 1, 0);
        for w in written.iter().filter(|w| w.len > 0) {
            let last = w.at.saturating_add(w.len - 1);
            match w.slice {
                Slice::Origin => {
                    for b in w.at / BLOCK..=last / BLOCK {
                        if let Some(t) = self.origin_touched.get_mut(b) {
                            *t = true;
                        }
                    }
                }
                Slice::Cow => {
                    for s in w.at / SECTOR..=last / SECTOR {
                        if let Some(word) = self.cow_touched.get_mut(s / 64) {
                            *word |= 1 << (s % 64);
                        }
                    }
                }
            }
        }
    }

    /// Whether the bytes block `b` is read from (`src`) were touched.
    fn touched(&self, b: usize, src: Source) -> bool {
        match src {
            Source::Origin => self.origin_touched.get(b).copied().unwrap_or(true),
            Source::Cow(at) => (at / SECTOR..(at + BLOCK).div_ceil(SECTOR)).any(|s| {
                self.cow_touched
                    .get(s / 64)
                    .is_none_or(|word| word >> (s % 64) & 1 == 1)
            }),
            Source::Mixed => true,
        }
    }

    /// Checks the blocks listed in `dirty` of the view of the images last
    /// loaded.
    fn check_dirty(
        &mut self,
        oracle: &Oracle,
        cut: &Cut<'_>,
        origin: &[u8],
        cow: &[u8],
    ) -> Judgement {
        let view = View {
            remap: &self.remap,
            chunk: self.chunk,
            origin,
            cow,
        };
        for &b in &self.dirty {
            let offset = b * BLOCK;
            let len = BLOCK.min(origin.len().saturating_sub(offset));
            let Some(got) = view.block(offset, len, &mut self.scratch) else {
                return Judgement::Lost(format!(
                    "block at {offset} is remapped beyond the COW image"
                ));
            };
            if let Err(lost) = oracle.check_block(cut, offset as u64, got) {
                return Judgement::Lost(lost.to_string());
            }
        }
        Judgement::Good
    }
}

/// Bytes in a sector, as a `usize`.
const SECTOR: usize = SECTOR_SIZE as usize;

/// The snapshot's view over the images.
struct View<'a> {
    remap: &'a [Option<u64>],
    chunk: usize,
    origin: &'a [u8],
    cow: &'a [u8],
}

impl<'a> View<'a> {
    /// `len` bytes of the view from `offset`: where they lie when they lie
    /// in one chunk, else put together in `scratch`. `None` if an exception
    /// points beyond the COW image.
    fn block<'s>(&self, offset: usize, len: usize, scratch: &'s mut Vec<u8>) -> Option<&'s [u8]>
    where
        'a: 's,
    {
        let within = offset % self.chunk;
        if within + len <= self.chunk {
            return self.piece(offset, len);
        }
        scratch.clear();
        let mut at = offset;
        while at < offset + len {
            let n = (self.chunk - at % self.chunk).min(offset + len - at);
            scratch.extend_from_slice(self.piece(at, n)?);
            at += n;
        }
        Some(&scratch[..])
    }

    /// `len` bytes from `offset`, within one chunk.
    fn piece(&self, offset: usize, len: usize) -> Option<&'a [u8]> {
        let end = offset.checked_add(len)?;
        match self.remap.get(offset / self.chunk).copied().flatten() {
            None => self.origin.get(offset..end),
            Some(new) => {
                let start = usize::try_from(new)
                    .ok()?
                    .checked_mul(self.chunk)?
                    .checked_add(offset % self.chunk)?;
                self.cow.get(start..start.checked_add(len)?)
            }
        }
    }
}

/// Chunk `chunk` of `image`, chunks being `bytes` long.
fn chunk_at(image: &[u8], chunk: u64, bytes: usize) -> Option<&[u8]> {
    let start = usize::try_from(chunk).ok()?.checked_mul(bytes)?;
    image.get(start..start.checked_add(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Log;
    use crate::log::LogBuilder;
    use crate::replay::ack_marks;
    use crate::replay::Geometry;
    use crate::tag::Kind;
    use crate::tag::Tag;
    use snap_format::write_exception;
    use snap_format::ChunkSize;
    use snap_format::DiskHeader;
    use snap_format::Exception;

    const ORIGIN: usize = 4 * BLOCK;
    const COW: usize = 16 * BLOCK;
    const GEO: Geometry = Geometry {
        origin_start: 0,
        origin_len: ORIGIN as u64,
        cow_start: ORIGIN as u64,
        cow_len: COW as u64,
    };

    fn block(kind: Kind, id: u64, offset: usize) -> Vec<u8> {
        Tag {
            kind,
            id,
            offset: offset as u64,
        }
        .block()
    }

    fn original() -> Vec<u8> {
        (0..4)
            .flat_map(|b| block(Kind::Pattern, 0, b * BLOCK))
            .collect()
    }

    /// A COW image of a store of `sectors`-sector chunks holding
    /// `exceptions` in area 0, the header saying `valid`.
    fn store(sectors: u32, valid: bool, exceptions: &[Exception]) -> Vec<u8> {
        let mut cow = vec![0u8; COW];
        let chunk = ChunkSize::new(sectors, BlockSizes::SECTOR).unwrap();
        DiskHeader::new(valid, chunk)
            .encode(&mut cow[..SECTOR])
            .unwrap();
        let layout = Layout::new(chunk);
        let bytes = layout.chunk_bytes() as usize;
        let at = layout.area_location(0).unwrap() as usize * bytes;
        let area = &mut cow[at..at + bytes];
        for (i, &e) in exceptions.iter().enumerate() {
            write_exception(area, i as u32, e).unwrap();
        }
        cow
    }

    fn oracle_of(b: &LogBuilder) -> (Log, Oracle) {
        let log = Log::parse(&b.build()[..]).unwrap();
        let o = Oracle::new(&log, &GEO, original(), &ack_marks(&log));
        (log, o)
    }

    fn judge(o: &Oracle, cut_at: usize, origin: &[u8], cow: &[u8]) -> Judgement {
        let holds = |e: usize| e <= cut_at;
        let cut = Cut {
            acked_by: cut_at,
            holds: &holds,
        };
        Judge::new(BlockSizes::SECTOR).judge(o, &cut, origin, cow)
    }

    fn no_writes() -> Oracle {
        oracle_of(LogBuilder::new(512).mark("setup-done")).1
    }

    #[test]
    fn no_store_yet_shows_the_origin() {
        let o = no_writes();
        let cow = vec![0u8; COW];
        assert_eq!(judge(&o, 0, &original(), &cow), Judgement::Good);
        let mut origin = original();
        origin[BLOCK..2 * BLOCK].copy_from_slice(&block(Kind::Origin, 1, BLOCK));
        let j = judge(&o, 0, &origin, &cow);
        assert!(
            matches!(&j, Judgement::Lost(w) if w.contains("block at 4096 shows origin-write 1")),
            "{j:?}"
        );
    }

    #[test]
    fn an_exception_keeps_the_old_chunk_of_an_origin_write() {
        let o = no_writes();
        let mut origin = original();
        origin[BLOCK..2 * BLOCK].copy_from_slice(&block(Kind::Origin, 1, BLOCK));
        let e = Exception {
            old_chunk: 1,
            new_chunk: 2,
        };
        let mut cow = store(8, true, &[e]);
        cow[2 * BLOCK..3 * BLOCK].copy_from_slice(&block(Kind::Pattern, 0, BLOCK));
        assert_eq!(judge(&o, 0, &origin, &cow), Judgement::Good);
        // The copy not there: the exception shows zeros.
        let empty = store(8, true, &[e]);
        assert!(judge(&o, 0, &origin, &empty).is_lost());
    }

    #[test]
    fn chunks_smaller_than_a_block_are_put_together() {
        let o = no_writes();
        let mut origin = original();
        origin[..BLOCK].copy_from_slice(&block(Kind::Origin, 1, 0));
        // One-sector chunks: origin chunks 0..8 are block 0, saved to COW
        // chunks 2..10 (area 0 is chunk 1).
        let exceptions: Vec<Exception> = (0..8)
            .map(|c| Exception {
                old_chunk: c,
                new_chunk: c + 2,
            })
            .collect();
        let mut cow = store(1, true, &exceptions);
        cow[1024..1024 + BLOCK].copy_from_slice(&block(Kind::Pattern, 0, 0));
        assert_eq!(judge(&o, 0, &origin, &cow), Judgement::Good);
        cow[1024 + 600] ^= 1;
        assert!(judge(&o, 0, &origin, &cow).is_lost());
    }

    #[test]
    fn a_header_marked_invalid_is_invalid_not_lost() {
        let o = no_writes();
        let mut origin = original();
        origin[..BLOCK].copy_from_slice(&block(Kind::Origin, 1, 0));
        let cow = store(8, false, &[]);
        assert_eq!(judge(&o, 0, &origin, &cow), Judgement::Invalid);
    }

    #[test]
    fn unreadable_or_damaged_metadata_is_lost() {
        let o = no_writes();
        let mut bad_magic = vec![0u8; COW];
        bad_magic[..4].copy_from_slice(b"nope");
        let j = judge(&o, 0, &original(), &bad_magic);
        assert!(
            matches!(&j, Judgement::Lost(w) if w.starts_with("snap_check")),
            "{j:?}"
        );
        let beyond = store(
            8,
            true,
            &[Exception {
                old_chunk: 0,
                new_chunk: 99,
            }],
        );
        assert!(judge(&o, 0, &original(), &beyond).is_lost());
        let duplicate = store(
            8,
            true,
            &[
                Exception {
                    old_chunk: 0,
                    new_chunk: 2,
                },
                Exception {
                    old_chunk: 1,
                    new_chunk: 2,
                },
            ],
        );
        assert!(judge(&o, 0, &original(), &duplicate).is_lost());
        assert!(judge(&o, 0, &original(), &[0u8; 8]).is_lost());
    }

    #[test]
    fn a_snapshot_write_must_be_shown_once_acknowledged_and_held() {
        let snap = block(Kind::Snapshot, 7, BLOCK);
        let mut b = LogBuilder::new(512);
        b.mark("setup-done") // 0
            .write(GEO.cow_start + 2 * BLOCK as u64, 0, &snap) // 1
            .mark("ack-7"); // 2
        let (_, o) = oracle_of(&b);
        let e = Exception {
            old_chunk: 1,
            new_chunk: 2,
        };
        let mut with = store(8, true, &[e]);
        with[2 * BLOCK..3 * BLOCK].copy_from_slice(&snap);
        let mut without = store(8, true, &[e]);
        without[2 * BLOCK..3 * BLOCK].copy_from_slice(&block(Kind::Pattern, 0, BLOCK));
        assert_eq!(judge(&o, 2, &original(), &with), Judgement::Good);
        assert!(judge(&o, 2, &original(), &without).is_lost());
        // Not acknowledged yet, or its entry not in the state: either.
        assert_eq!(judge(&o, 1, &original(), &without), Judgement::Good);
        let holds = |e: usize| e != 1;
        let cut = Cut {
            acked_by: 2,
            holds: &holds,
        };
        let mut j = Judge::new(BlockSizes::SECTOR);
        assert_eq!(j.judge(&o, &cut, &original(), &without), Judgement::Good);
    }

    /// Judges `origin` and `cow`, which are the reference images changed
    /// by `written`.
    fn over(
        j: &mut Judge,
        o: &Oracle,
        origin: &[u8],
        cow: &[u8],
        written: &[Written],
    ) -> Judgement {
        let holds = |_: usize| true;
        let cut = Cut {
            acked_by: 0,
            holds: &holds,
        };
        j.judge_over(1, o, &cut, origin, cow, written)
    }

    #[test]
    fn judging_over_a_reference_checks_what_the_writes_can_change() {
        let o = no_writes();
        let e = Exception {
            old_chunk: 1,
            new_chunk: 2,
        };
        let mut cow = store(8, true, &[e]);
        cow[2 * BLOCK..3 * BLOCK].copy_from_slice(&block(Kind::Pattern, 0, BLOCK));
        let origin = original();
        let mut j = Judge::new(BlockSizes::SECTOR);
        j.set_reference(1, &o, &origin, &cow);
        assert!(j.has_reference(1) && !j.has_reference(2));
        let at = |slice, at| Written {
            slice,
            at,
            len: BLOCK,
        };
        // An origin write over the excepted chunk: good.
        let mut o1 = origin.clone();
        o1[BLOCK..2 * BLOCK].copy_from_slice(&block(Kind::Origin, 1, BLOCK));
        let w = [at(Slice::Origin, BLOCK)];
        assert_eq!(over(&mut j, &o, &o1, &cow, &w), Judgement::Good);
        // Over a chunk without an exception: lost.
        let mut o2 = origin.clone();
        o2[2 * BLOCK..3 * BLOCK].copy_from_slice(&block(Kind::Origin, 2, 2 * BLOCK));
        let w = [at(Slice::Origin, 2 * BLOCK)];
        assert!(over(&mut j, &o, &o2, &cow, &w).is_lost());
        // The saved copy overwritten: lost.
        let mut c1 = cow.clone();
        c1[2 * BLOCK..3 * BLOCK].fill(0);
        let w = [at(Slice::Cow, 2 * BLOCK)];
        assert!(over(&mut j, &o, &origin, &c1, &w).is_lost());
        // A new exception (the metadata changed) to a chunk of zeros: lost.
        let mut c2 = store(
            8,
            true,
            &[
                e,
                Exception {
                    old_chunk: 3,
                    new_chunk: 3,
                },
            ],
        );
        c2[2 * BLOCK..3 * BLOCK].copy_from_slice(&block(Kind::Pattern, 0, BLOCK));
        let w = [at(Slice::Cow, BLOCK)];
        assert!(over(&mut j, &o, &origin, &c2, &w).is_lost());
        // The header marked invalid.
        let mut c3 = cow.clone();
        c3[..512].copy_from_slice(&store(8, false, &[])[..512]);
        let w = [Written {
            slice: Slice::Cow,
            at: 0,
            len: 512,
        }];
        assert_eq!(over(&mut j, &o, &origin, &c3, &w), Judgement::Invalid);
    }

    #[test]
    fn a_block_the_reference_loses_is_lost_whatever_the_writes() {
        let o = no_writes();
        let mut origin = original();
        origin[3 * BLOCK..].copy_from_slice(&block(Kind::Origin, 1, 3 * BLOCK));
        let cow = vec![0u8; COW];
        let mut j = Judge::new(BlockSizes::SECTOR);
        j.set_reference(1, &o, &origin, &cow);
        let j1 = over(&mut j, &o, &origin, &cow, &[]);
        assert!(
            matches!(&j1, Judgement::Lost(w) if w.contains("block at 12288")),
            "{j1:?}"
        );
        // Another key: every block is checked.
        let holds = |_: usize| true;
        let cut = Cut {
            acked_by: 0,
            holds: &holds,
        };
        assert!(j.judge_over(2, &o, &cut, &origin, &cow, &[]).is_lost());
        assert_eq!(
            j.judge_over(2, &o, &cut, &original(), &cow, &[]),
            Judgement::Good
        );
    }
}
