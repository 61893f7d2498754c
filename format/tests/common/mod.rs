// SPDX-License-Identifier: GPL-2.0-only
//! Helpers shared by the integration tests: building COW images in memory.

#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use snap_format::*;

/// Layout for a chunk size in sectors (512-byte blocks).
pub fn layout(sectors: u32) -> Layout {
    Layout::new(ChunkSize::new(sectors, BlockSizes::SECTOR).unwrap())
}

/// A zeroed image of `chunks` chunks.
pub fn image(l: Layout, chunks: u64) -> Vec<u8> {
    vec![0u8; usize::try_from(chunks * u64::from(l.chunk_bytes())).unwrap()]
}

/// Byte range of chunk `c` in an image.
pub fn chunk_range(l: Layout, c: u64) -> std::ops::Range<usize> {
    let b = usize::try_from(l.chunk_bytes()).unwrap();
    let s = usize::try_from(c).unwrap() * b;
    s..s + b
}

/// Writes a header into chunk 0.
pub fn put_header(img: &mut [u8], l: Layout, h: DiskHeader) {
    h.encode(&mut img[chunk_range(l, 0)]).unwrap();
}

/// Writes the exceptions of area `area` (and zeroes the rest of it).
pub fn put_area(img: &mut [u8], l: Layout, area: u64, es: &[Exception]) {
    let r = chunk_range(l, l.area_location(area).unwrap());
    let a = &mut img[r];
    a.fill(0);
    for (i, e) in es.iter().enumerate() {
        write_exception(a, u32::try_from(i).unwrap(), *e).unwrap();
    }
}

/// Exceptions of a store written in order: exception k (0-based) uses the
/// k-th data chunk and origin chunk `old(k)`.
pub fn in_order(l: Layout, n: u64, old: impl Fn(u64) -> u64) -> Vec<Vec<Exception>> {
    let epa = u64::from(l.exceptions_per_area());
    let mut areas: Vec<Vec<Exception>> = vec![vec![]];
    let mut next = INITIAL_NEXT_FREE;
    for k in 0..n {
        if areas.last().unwrap().len() as u64 == epa {
            areas.push(vec![]);
        }
        areas.last_mut().unwrap().push(Exception {
            old_chunk: old(k),
            new_chunk: next,
        });
        next = l.skip_metadata(next + 1).unwrap();
    }
    if areas.last().unwrap().len() as u64 == epa {
        areas.push(vec![]);
    }
    areas
}

/// An image with a valid header and the given areas.
pub fn store_image(l: Layout, chunks: u64, areas: &[Vec<Exception>]) -> Vec<u8> {
    let mut img = image(l, chunks);
    put_header(&mut img, l, DiskHeader::new(true, l.chunk_size()));
    for (i, a) in areas.iter().enumerate() {
        put_area(&mut img, l, i as u64, a);
    }
    img
}

/// Sectors of an image.
pub fn sectors(img: &[u8]) -> u64 {
    img.len() as u64 / 512
}

/// Reads chunk `c` of `img` into `buf` (an error past the end).
pub fn read_chunk(img: &[u8], l: Layout, c: u64, buf: &mut [u8]) -> Result<(), i32> {
    let r = chunk_range(l, c);
    match img.get(r) {
        Some(src) => {
            buf.copy_from_slice(src);
            Ok(())
        }
        None => Err(errno::EIO),
    }
}

/// Scans an image; returns the result, the exceptions in order and the
/// area buffer holding the last area.
pub fn scan(img: &[u8], l: Layout) -> Result<(ScanResult, Vec<Exception>, Vec<u8>), Error> {
    let mut area = vec![0u8; usize::try_from(l.chunk_bytes()).unwrap()];
    let mut seen = vec![];
    let r = scan_areas(
        l,
        sectors(img),
        &mut area,
        |c, buf| read_chunk(img, l, c, buf),
        |e| {
            seen.push(e);
            Ok(())
        },
    )?;
    Ok((r, seen, area))
}

/// What [`merge_prepare`] found: [`PrepareMerge`] with the run already
/// looked up in the area buffer, as the kernel store does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prep {
    Done,
    ReadArea(AreaIo),
    Run(MergeRun),
}

/// `prepare_merge`, then (outside the state) the run search and
/// `merge_run_found`.
pub fn merge_prepare(s: &mut Pstore, area: &[u8]) -> Result<Prep, Error> {
    Ok(match s.prepare_merge()? {
        PrepareMerge::Done => Prep::Done,
        PrepareMerge::ReadArea(io) => Prep::ReadArea(io),
        PrepareMerge::FindRun(q) => {
            let run = q.find(area)?;
            s.merge_run_found(&run)?;
            Prep::Run(run)
        }
    })
}

/// The previous area, read into `area`: checked, accepted, and its last
/// run found.
pub fn merge_read(s: &mut Pstore, area: &[u8], cow_sectors: u64) -> Result<MergeRun, Error> {
    let prev = s.current_area().checked_sub(1).ok_or(Error::MergeState)?;
    let checked = s.layout().check_full_area(prev, area, cow_sectors)?;
    let run = s.merge_area_read(checked)?.find(area)?;
    s.merge_run_found(&run)?;
    Ok(run)
}

/// `commit_merge` with the caller's clearing of the merged records.
pub fn merge_commit(s: &mut Pstore, area: &mut [u8], n: u32) -> Result<AreaWrite, Error> {
    if area.len() as u64 != u64::from(s.layout().chunk_bytes()) {
        return Err(Error::BufferSize {
            expected: u64::from(s.layout().chunk_bytes()),
            actual: area.len() as u64,
        });
    }
    let m = s.commit_merge(n)?;
    area[m.clear].fill(0);
    Ok(m.write)
}

/// `commit_io_done` with the caller's zeroing of the area buffer when the
/// store moves to the next area.
pub fn io_done(s: &mut Pstore, area: &mut [u8], ok: bool) -> Result<CommitStep, Error> {
    let step = s.commit_io_done(ok)?;
    if let CommitStep::Complete {
        clear_area: true, ..
    } = step
    {
        area.fill(0);
    }
    Ok(step)
}
