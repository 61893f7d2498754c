// SPDX-License-Identifier: GPL-2.0-only
//! Fuzz target: the input is a tiny COW device image run through the whole
//! activation path (header decision, validating scan, store construction),
//! then through a few commits that are written back and rescanned, and a
//! full merge. Nothing may panic, and what the scanner accepts must obey
//! the layout rules.
//!
//! Input: byte 0 is a control byte, the rest is the image.
//! - bits 0-1: table chunk size 1 << n sectors (512 B .. 4 KiB);
//! - bit 2: the table supplies that size (else the default, 32 sectors);
//! - bit 3: write block is the whole chunk (else 512 bytes);
//! - bits 4-7: number of exceptions to commit after activation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use snap_format::*;

/// Largest chunk this target accepts from a header (keeps memory small).
const MAX_FUZZ_CHUNK_BYTES: u32 = 64 * 1024;

fn read_chunk(img: &[u8], l: Layout, chunk: u64, buf: &mut [u8]) -> Result<(), i32> {
    let size = l.chunk_bytes() as usize;
    let start = usize::try_from(chunk)
        .map_err(|_| errno::EIO)?
        .checked_mul(size)
        .ok_or(errno::EIO)?;
    let src = img.get(start..start + size).ok_or(errno::EIO)?;
    buf.copy_from_slice(src);
    Ok(())
}

fn write_at(img: &mut [u8], sector: u64, data: &[u8]) -> bool {
    let Some(start) = usize::try_from(sector)
        .ok()
        .and_then(|s| s.checked_mul(512))
    else {
        return false;
    };
    match img.get_mut(start..start + data.len()) {
        Some(dst) => {
            dst.copy_from_slice(data);
            true
        }
        None => false,
    }
}

fn scan_image(img: &[u8], l: Layout) -> Result<(ScanResult, Vec<Exception>, Vec<u8>), Error> {
    let cow_sectors = img.len() as u64 / 512;
    let cow_chunks = l.device_chunks(cow_sectors);
    let mut area = vec![0u8; l.chunk_bytes() as usize];
    let mut seen = Vec::new();
    let r = scan_areas(
        l,
        cow_sectors,
        &mut area,
        |c, buf| read_chunk(img, l, c, buf),
        |e| {
            assert!(l.is_data_chunk(e.new_chunk), "{e:?}");
            assert!(e.new_chunk < cow_chunks, "{e:?}");
            assert!(e.old_chunk <= l.max_old_chunk(), "{e:?}");
            seen.push(e);
            Ok(())
        },
    )?;
    assert!(!l.is_metadata_chunk(r.next_free));
    assert!(r.current_committed < l.exceptions_per_area());
    assert_eq!(r.exceptions, seen.len() as u64);
    Ok((r, seen, area))
}

fn run(data: &[u8]) {
    let Some((&ctl, image)) = data.split_first() else {
        return;
    };
    let blocks = BlockSizes::SECTOR;
    let table_sectors = if ctl & 4 != 0 { 1u32 << (ctl & 3) } else { 0 };
    let table = TableChunkSize::new(table_sectors, blocks).unwrap();

    // Chunk 0 is read with the table's chunk size; a short device fails.
    let Some(header) = image.get(..table.chunk_size.bytes() as usize) else {
        return;
    };
    let decision = match read_header(header, table, blocks, |w| {
        let _ = w.to_string();
    }) {
        Ok(d) => d,
        Err(e) => {
            assert!(e.errno() > 0);
            let _ = e.to_string();
            return;
        }
    };
    let l = decision.layout();
    if l.chunk_bytes() > MAX_FUZZ_CHUNK_BYTES {
        return;
    }
    let wb = if ctl & 8 != 0 {
        LogicalBlockSize::new(l.chunk_bytes()).unwrap()
    } else {
        LogicalBlockSize::SECTOR
    };
    let mut img = image.to_vec();
    let cow_sectors = img.len() as u64 / 512;

    let (mut store, mut area, mut seen) = match decision {
        HeaderDecision::New(_) => {
            let mut area = vec![0u8; l.chunk_bytes() as usize];
            let s = Pstore::new_snapshot(l, wb, &mut area).unwrap();
            // As the kernel store: zero area 0 (may not fit), then the
            // header.
            let mut h = vec![0u8; l.chunk_bytes() as usize];
            s.header().encode(&mut h).unwrap();
            if !write_at(&mut img, l.chunk_sectors().into(), &vec![0u8; h.len()]) {
                return;
            }
            write_at(&mut img, 0, &h);
            (s, area, Vec::new())
        }
        HeaderDecision::Invalid(_) => {
            let mut area = vec![0u8; l.chunk_bytes() as usize];
            let mut s = Pstore::new_invalid(l, wb, &mut area).unwrap();
            assert_eq!(s.prepare_merge(), Ok(PrepareMerge::Done));
            return;
        }
        HeaderDecision::Valid(_) => match scan_image(&img, l) {
            Ok((r, seen, mut area)) => {
                let mut s = Pstore::from_scan(l, wb, &r, &mut area).unwrap();
                // Activation writes nothing: the cleared garbage goes back
                // to disk before the first commit, below.
                (s, area, seen)
            }
            Err(e) => {
                assert!(e.errno() > 0);
                let _ = e.to_string();
                return;
            }
        },
    };
    let _ = store.usage(cow_sectors);

    // Commit a few exceptions, in one batch, doing the I/O on the image.
    let n = u64::from(ctl >> 4);
    let mut prepared = Vec::new();
    for _ in 0..n {
        match store.prepare_exception(cow_sectors) {
            Ok(c) => {
                assert!(l.is_data_chunk(c));
                assert!(seen.iter().all(|e| e.new_chunk != c), "chunk {c} reused");
                prepared.push(c);
            }
            Err(e) => {
                assert_eq!(e.errno(), errno::ENOSPC);
                break;
            }
        }
    }
    // As the kernel store: the first commit writes the cleared garbage
    // back before its record.
    if !prepared.is_empty() {
        if let Some(w) = store.cleanup_write().unwrap() {
            let ok = write_at(&mut img, w.sector, w.bytes(&area).unwrap());
            store.cleanup_done(ok);
        }
    }
    for (k, c) in prepared.iter().enumerate() {
        let e = Exception {
            old_chunk: k as u64,
            new_chunk: *c,
        };
        let mut step = store.commit_exception(&mut area, e, true).unwrap();
        loop {
            match step {
                CommitStep::Queued => break,
                CommitStep::Complete { clear_area, .. } => {
                    if clear_area {
                        area.fill(0);
                    }
                    break;
                }
                CommitStep::Refused { error, .. } => panic!("refused a prepared chunk: {error}"),
                CommitStep::ZeroNextArea(io) => {
                    let zeros = vec![0u8; l.chunk_bytes() as usize];
                    let ok = write_at(&mut img, io.sector, &zeros);
                    step = store.commit_io_done(ok).unwrap();
                }
                CommitStep::WriteArea(w) => {
                    let ok = write_at(&mut img, w.sector, w.bytes(&area).unwrap());
                    step = store.commit_io_done(ok).unwrap();
                }
            }
        }
        seen.push(e);
    }
    if !store.is_valid() {
        return;
    }

    // What was written reads back: the old exceptions plus the new ones.
    let (r, reread, mut area) = scan_image(&img, l).unwrap();
    assert_eq!(reread, seen);
    if !prepared.is_empty() {
        // The area write also cleared any leftovers after the end marker.
        assert_eq!(r.warning, None);
    }
    let mut store = Pstore::from_scan(l, wb, &r, &mut area).unwrap();

    // Merge everything back, newest first.
    let mut left = seen.len();
    for _ in 0..=(seen.len() + 2 * r.current_area as usize + 2) {
        let query = match store.prepare_merge() {
            Ok(PrepareMerge::Done) => break,
            Ok(PrepareMerge::FindRun(query)) => query,
            Ok(PrepareMerge::ReadArea(io)) => {
                read_chunk(&img, l, io.chunk, &mut area).unwrap();
                let checked = l.check_full_area(io.area, &area, cow_sectors).unwrap();
                store.merge_area_read(checked).unwrap()
            }
            Err(e) => panic!("prepare_merge: {e}"),
        };
        let run = query.find(&area).unwrap();
        store.merge_run_found(&run).unwrap();
        let last = seen[left - 1];
        assert_eq!(
            (run.last_old_chunk, run.last_new_chunk),
            (last.old_chunk, last.new_chunk)
        );
        let m = store.commit_merge(run.count).unwrap();
        area[m.clear].fill(0);
        let w = m.write;
        let ok = write_at(&mut img, w.sector, w.bytes(&area).unwrap());
        store.commit_merge_done(ok).unwrap();
        assert!(ok);
        left -= run.count as usize;
    }
    assert_eq!(left, 0);
    assert_eq!(store.prepare_merge(), Ok(PrepareMerge::Done));
    let (_, after, _) = scan_image(&img, l).unwrap();
    assert!(after.is_empty());
}

fuzz_target!(|data: &[u8]| run(data));
