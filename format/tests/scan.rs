// SPDX-License-Identifier: GPL-2.0-only
//! Unit tests of the validating activation scan.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::*;
use snap_format::*;

fn ex(old_chunk: u64, new_chunk: u64) -> Exception {
    Exception {
        old_chunk,
        new_chunk,
    }
}

#[test]
fn empty_store_scans_to_area_0_with_nothing() {
    let l = layout(1);
    let img = store_image(l, 10, &[vec![]]);
    let (r, seen, _) = scan(&img, l).unwrap();
    assert!(seen.is_empty());
    assert_eq!(
        r,
        ScanResult {
            current_area: 0,
            current_committed: 0,
            next_free: 2,
            exceptions: 0,
            warning: None
        }
    );
}

#[test]
fn partial_area_reports_committed_and_next_free_from_max_new_chunk() {
    let l = layout(1);
    // Out-of-order commit: chunk 5 before chunk 3; a hole at 4.
    let img = store_image(l, 40, &[vec![ex(10, 2), ex(11, 5), ex(12, 3)]]);
    let (r, seen, area) = scan(&img, l).unwrap();
    assert_eq!(seen, vec![ex(10, 2), ex(11, 5), ex(12, 3)]);
    assert_eq!(
        (r.current_area, r.current_committed, r.next_free),
        (0, 3, 6)
    );
    assert_eq!(r.exceptions, 3);
    assert_eq!(read_exception(&area, 2), Some(ex(12, 3)));
}

#[test]
fn full_areas_continue_to_the_next_area() {
    let l = layout(1); // 32 per area
    let areas = in_order(l, 32 * 2 + 5, |k| 1000 + k);
    assert_eq!(areas.len(), 3);
    let img = store_image(l, 200, &areas);
    let (r, seen, _) = scan(&img, l).unwrap();
    assert_eq!(seen.len(), 69);
    assert_eq!(seen, areas.concat());
    assert_eq!((r.current_area, r.current_committed), (2, 5));
    let last = seen.last().unwrap().new_chunk;
    assert_eq!(r.next_free, l.skip_metadata(last + 1).unwrap());
}

#[test]
fn last_exception_of_an_area_fills_it_and_the_next_area_is_empty() {
    let l = layout(1);
    let areas = in_order(l, 32, |k| k);
    assert_eq!(areas.len(), 2);
    assert!(areas[1].is_empty());
    // Last data chunk of area 0 is 33; next_free skips area 1 at 34.
    assert_eq!(areas[0][31].new_chunk, 33);
    let img = store_image(l, 100, &areas);
    let (r, _, _) = scan(&img, l).unwrap();
    assert_eq!(
        (r.current_area, r.current_committed, r.next_free),
        (1, 0, 35)
    );
}

#[test]
fn reload_with_next_free_right_before_a_metadata_area() {
    let l = layout(1);
    let areas = in_order(l, 31, |k| k);
    assert_eq!(areas[0][30].new_chunk, 32);
    let img = store_image(l, 100, &areas);
    let (r, _, _) = scan(&img, l).unwrap();
    assert_eq!(r.next_free, 33);
    let (s, _) = load(&img, l, LogicalBlockSize::SECTOR);
    assert_eq!(prepare(&s, 100).unwrap(), 33);
    assert_eq!(s.get().next_free(), 35);
    assert_eq!(prepare(&s, 100).unwrap(), 35);
}

#[test]
fn every_power_of_two_chunk_size_up_to_2_mib_scans_a_full_area() {
    for shift in 0..=12u32 {
        let l = layout(1 << shift);
        let epa = u64::from(l.exceptions_per_area());
        let areas = in_order(l, epa + 1, |k| k * 3);
        let cow_sectors = (2 * (epa + 1) + 1) * u64::from(l.chunk_sectors());
        let mut s = Scan::new(l, cow_sectors);
        let mut seen = 0u64;
        let mut result = None;
        for (i, a) in areas.iter().enumerate() {
            let io = s.next_area().unwrap();
            assert_eq!(io.chunk, l.area_location(i as u64).unwrap());
            let mut buf = vec![0u8; l.chunk_bytes() as usize];
            for (j, e) in a.iter().enumerate() {
                write_exception(&mut buf, j as u32, *e).unwrap();
            }
            let fill = s
                .scan_area(&buf, |_| {
                    seen += 1;
                    Ok::<(), ()>(())
                })
                .unwrap();
            match fill {
                AreaFill::Full(next) => s = next,
                AreaFill::Partial(r) => {
                    // Only the last area ends the scan.
                    assert_eq!(i, areas.len() - 1);
                    result = Some(r);
                    break;
                }
            }
        }
        let r = result.unwrap();
        assert_eq!(seen, epa + 1);
        assert_eq!((r.current_area, r.current_committed), (1, 1));
        assert_eq!(r.next_free, epa + 4);
    }
}

#[test]
fn cow_device_ending_mid_area_scans_and_refuses_chunks_past_the_end() {
    let l = layout(1);
    // Device: header, area 0, 10 data chunks, plus half a chunk.
    let chunks = 12;
    let mut img = store_image(l, chunks, &[in_order(l, 10, |k| k)[0].clone()]);
    img.extend_from_slice(&[0u8; 256]);
    let (r, _, _) = scan(&img, l).unwrap();
    assert_eq!((r.current_committed, r.next_free), (10, 12));
    let (s, _) = load(&img, l, LogicalBlockSize::SECTOR);
    assert_eq!(
        prepare(&s, sectors(&img)),
        Err(Error::NoSpace {
            chunk: 12,
            cow_sectors: 12
        })
    );
    // An exception pointing at the partial last chunk is refused on scan.
    put_area(&mut img, l, 0, &[ex(1, 12)]);
    assert_eq!(
        scan(&img, l).unwrap_err(),
        Error::NewChunkBeyondDevice {
            area: 0,
            index: 0,
            new_chunk: 12,
            cow_chunks: 12
        }
    );
}

#[test]
fn new_chunk_on_a_metadata_area_is_refused() {
    let l = layout(1);
    let img = store_image(l, 100, &[vec![ex(1, 2), ex(2, 34)]]);
    let e = scan(&img, l).unwrap_err();
    assert_eq!(
        e,
        Error::NewChunkIsMetadata {
            area: 0,
            index: 1,
            new_chunk: 34,
            metadata_area: 1
        }
    );
    assert_eq!(e.errno(), errno::EINVAL);
    // Chunk 1 is area 0 itself.
    let img = store_image(l, 100, &[vec![ex(1, 1)]]);
    assert!(matches!(
        scan(&img, l).unwrap_err(),
        Error::NewChunkIsMetadata {
            metadata_area: 0,
            ..
        }
    ));
}

#[test]
fn new_chunk_with_dm_count_bits_is_beyond_the_device() {
    let l = layout(1);
    let img = store_image(l, 100, &[vec![ex(1, (1 << 56) | 2)]]);
    assert!(matches!(
        scan(&img, l).unwrap_err(),
        Error::NewChunkBeyondDevice { .. }
    ));
    let img = store_image(l, 100, &[vec![ex(1, u64::MAX)]]);
    assert!(matches!(
        scan(&img, l).unwrap_err(),
        Error::NewChunkBeyondDevice { .. }
    ));
}

#[test]
fn old_chunk_past_the_largest_device_is_refused() {
    for sectors in [1u32, 8, 1024] {
        let l = layout(sectors);
        let max = l.max_old_chunk();
        let img = store_image(l, 4, &[vec![ex(max, 2)]]);
        assert!(scan(&img, l).is_ok());
        let img = store_image(l, 4, &[vec![ex(max + 1, 2)]]);
        assert_eq!(
            scan(&img, l).unwrap_err(),
            Error::OldChunkTooLarge {
                area: 0,
                index: 0,
                old_chunk: max + 1,
                max
            }
        );
    }
    let l = layout(1);
    let img = store_image(l, 4, &[vec![ex(u64::MAX, 2)]]);
    assert!(matches!(
        scan(&img, l).unwrap_err(),
        Error::OldChunkTooLarge { .. }
    ));
}

#[test]
fn area_beyond_the_device_is_refused_before_reading() {
    let l = layout(1);
    // Area 0 full, device ends right where area 1 would be.
    let areas = in_order(l, 32, |k| k);
    let img = store_image(l, 34, &areas[..1]);
    assert_eq!(
        scan(&img, l).unwrap_err(),
        Error::AreaBeyondDevice {
            area: 1,
            chunk: 34,
            cow_chunks: 34
        }
    );
    // A device of a single chunk has no area 0.
    let img = store_image(l, 1, &[]);
    assert!(matches!(
        scan(&img, l).unwrap_err(),
        Error::AreaBeyondDevice { area: 0, .. }
    ));
}

#[test]
fn garbage_after_the_end_marker_is_a_warning_and_is_cleared() {
    let l = layout(1);
    let mut img = store_image(l, 100, &[vec![ex(1, 2), ex(2, 3)]]);
    // Records 4 and 9 hold leftovers, and the marker has an old_chunk.
    let base = chunk_range(l, 1).start;
    write_exception(&mut img[base..base + 512], 4, ex(7, 40)).unwrap();
    write_exception(&mut img[base..base + 512], 9, ex(8, 41)).unwrap();
    let (r, seen, area) = scan(&img, l).unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(r.next_free, 4); // leftovers do not count, as in C
    assert_eq!(
        r.warning,
        Some(Warning::GarbageAfterEndMarker {
            area: 0,
            end: 2,
            first: 4,
            records: 2
        })
    );
    let wb = LogicalBlockSize::SECTOR;
    let (_, c) = Committer::from_scan(l, wb, &r, buffers_with(l, wb, area)).unwrap();
    assert_eq!(read_exception(c.area(), 4), Some(Exception::default()));
    assert_eq!(read_exception(c.area(), 9), Some(Exception::default()));
    assert_eq!(c.dirty_range(), Some(0..512));
    assert!(c.cleanup_pending());
    // A nonzero old_chunk in the marker record alone also counts.
    put_area(&mut img, l, 0, &[ex(1, 2), ex(5, 0)]);
    let (r, seen, _) = scan(&img, l).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        r.warning,
        Some(Warning::GarbageAfterEndMarker {
            area: 0,
            end: 1,
            first: 1,
            records: 1
        })
    );
}

/// A device that keeps a copy of the image after each write through it.
struct Recorder {
    dev: MemDev,
    images: Vec<Vec<u8>>,
}

impl MetadataIo for Recorder {
    type Area = Vec<u8>;
    fn cow_sectors(&self) -> u64 {
        self.dev.cow_sectors()
    }
    fn read_area(&mut self, io: AreaIo, area: &mut Vec<u8>) -> Result<(), IoError> {
        self.dev.read_area(io, area)
    }
    fn write_area(&mut self, w: &AreaWrite, area: &Vec<u8>) -> Result<(), IoError> {
        let r = self.dev.write_area(w, area);
        self.images.push(self.dev.img.clone());
        r
    }
    fn zero_area(&mut self, io: AreaIo) -> Result<(), IoError> {
        self.dev.zero_area(io)
    }
    fn write_header(&mut self, header: DiskHeader) -> Result<(), IoError> {
        self.dev.write_header(header)
    }
    fn report(&mut self, error: &Error) {
        self.dev.report(error);
    }
}

#[test]
fn cleared_garbage_cannot_be_revived_by_the_next_commit() {
    // C keeps leftovers in memory: after committing into slot 2, the
    // leftover in slot 3 would become a live exception on the next load.
    let l = layout(1);
    let mut img = store_image(l, 100, &[vec![ex(1, 2), ex(2, 3)]]);
    let base = chunk_range(l, 1).start;
    write_exception(&mut img[base..base + 512], 3, ex(9, 5)).unwrap();
    // Loading writes nothing: the cleared garbage waits for the first
    // commit.
    let (s, mut c) = load(&img, l, LogicalBlockSize::SECTOR);
    assert!(c.cleanup_pending());
    assert_eq!(c.dirty_range(), Some(0..512));
    let mut d = Recorder {
        dev: MemDev::new(img),
        images: vec![],
    };
    let ch = prepare(&s, sectors(&d.dev.img)).unwrap();
    assert_eq!(ch, 4);
    let w = expect_write(c.commit_exception(&s, &mut d, ex(3, ch), true, 0));
    assert!(!c.cleanup_pending());
    // The clean-up was written synchronously, through the I/O, before the
    // commit returned its own write.
    assert_eq!(d.images.len(), 1);
    assert!(issue(&mut d.dev, &w, true));
    d.images.push(d.dev.img.clone());
    // No record may reach the disk before the cleared garbage does: the
    // first write clears slot 3 and does not hold the new record yet.
    let (due, next) = complete(&mut c, &s, w, true);
    assert_eq!((due, next.is_none()), (vec![0], true));
    let w = writes(&d.dev.ops);
    assert_eq!(w.len(), 2);
    assert!(matches!(d.dev.ops[0], Op::Write(_)));
    assert!(w[0].range().unwrap().contains(&(3 * 16)));
    assert!(w[0].range().unwrap().contains(&(2 * 16)));
    let first = &d.images[0][base..base + 512];
    assert_eq!(read_exception(first, 3), Some(Exception::default()));
    assert_eq!(read_exception(first, 2), Some(Exception::default()));
    let second = &d.images[1][base..base + 512];
    assert_eq!(read_exception(second, 2), Some(ex(3, 4)));
    assert!(s.get().is_valid());
    assert!(d.dev.reports.is_empty());
    let (r, seen, _) = scan(&d.dev.img, l).unwrap();
    assert_eq!(seen, vec![ex(1, 2), ex(2, 3), ex(3, 4)]);
    assert_eq!(r.warning, None);
}

#[test]
fn callback_errors_stop_the_scan_with_their_errno() {
    let l = layout(1);
    let img = store_image(l, 100, &[vec![ex(1, 2), ex(2, 3)]]);
    let mut area = vec![0u8; 512];
    let mut n = 0;
    let e = scan_areas(
        l,
        sectors(&img),
        &mut area,
        |c, buf| read_chunk(&img, l, c, buf),
        |_| {
            n += 1;
            if n == 2 {
                Err(errno::ENOMEM)
            } else {
                Ok(())
            }
        },
    )
    .unwrap_err();
    assert_eq!(
        e,
        Error::Callback {
            errno: errno::ENOMEM
        }
    );
    assert_eq!(e.errno(), errno::ENOMEM);
}

#[test]
fn read_errors_stop_the_scan_with_their_errno() {
    let l = layout(1);
    let mut area = vec![0u8; 512];
    let e = scan_areas(l, 100, &mut area, |_, _| Err(errno::EIO), |_| Ok(())).unwrap_err();
    assert_eq!(e, Error::ReadFailed { chunk: 1, errno: 5 });
}

#[test]
fn scan_refuses_wrong_buffer_sizes_and_ends_with_the_partial_area() {
    let l = layout(1);
    let s = Scan::new(l, 100);
    let Stopped { stop, scan: s } = s.validate_area(&[0u8; 511]).unwrap_err();
    assert_eq!(
        stop,
        Error::BufferSize {
            expected: 512,
            actual: 511
        }
    );
    // The scan comes back as it was: area 0 is still to read.
    assert_eq!(s, Scan::new(l, 100));
    assert_eq!(s.next_area().unwrap().area, 0);
    // The partial area ends the scan with its result; no scan is left to
    // call after it (what `Error::ScanState` refused no longer compiles).
    assert_eq!(
        s.validate_area(&[0u8; 512]),
        Ok(AreaFill::Partial(ScanResult {
            current_area: 0,
            current_committed: 0,
            next_free: 2,
            exceptions: 0,
            warning: None
        }))
    );
}

#[test]
fn a_stopped_scan_comes_back_as_it_was_before_the_area() {
    let l = layout(1); // 32 per area
    let full = in_order(l, 32, |k| 1000 + k).concat();
    let encode = |records: &[Exception]| -> Vec<u8> {
        let mut area = vec![0u8; 512];
        for (i, e) in records.iter().enumerate() {
            write_exception(&mut area, i as u32, *e).unwrap();
        }
        area
    };
    let AreaFill::Full(after_0) = Scan::new(l, 100).validate_area(&encode(&full)).unwrap() else {
        panic!("area 0 is full");
    };
    // Area 1: two good records, then one past the device.
    let bad = encode(&[ex(1, 35), ex(2, 36), ex(3, 500)]);
    let Stopped { stop, scan } = after_0.clone().validate_area(&bad).unwrap_err();
    assert!(matches!(
        stop,
        Error::NewChunkBeyondDevice {
            area: 1,
            index: 2,
            ..
        }
    ));
    assert_eq!(scan, after_0);
    // A visitor's stop too, after one exception of the area.
    let Stopped { stop, scan } = after_0
        .clone()
        .scan_area(&bad, |e| if e.old_chunk == 2 { Err(7) } else { Ok(()) })
        .unwrap_err();
    assert_eq!(stop, ScanStop::Visitor(7));
    assert_eq!(scan, after_0);
    // Nothing of the stopped area counts when the scan goes on.
    let good = encode(&[ex(1, 35), ex(2, 36)]);
    let AreaFill::Partial(r) = scan.validate_area(&good).unwrap() else {
        panic!("area 1 is partial");
    };
    assert_eq!(
        (
            r.current_area,
            r.current_committed,
            r.exceptions,
            r.next_free
        ),
        (1, 2, 34, 37)
    );
}

#[test]
fn prefetch_window_covers_twelve_areas_ahead_and_stops_at_the_device_end() {
    let l = layout(1); // stride 33
    let mut s = Scan::new(l, 1 + 33 * 20);
    let first: Vec<u64> = std::iter::from_fn(|| s.next_prefetch()).collect();
    assert_eq!(first.len(), 13); // areas 0..=12
    assert_eq!(first[0], 1);
    assert_eq!(first[12], 1 + 33 * 12);
    // After a full area, one more area comes into the window.
    let full: Vec<u8> = in_order(l, 32, |k| k)[0]
        .iter()
        .flat_map(|e| e.encode())
        .collect();
    let AreaFill::Full(mut s) = s.validate_area(&full).unwrap() else {
        panic!("area 0 is full");
    };
    let next: Vec<u64> = std::iter::from_fn(|| s.next_prefetch()).collect();
    assert_eq!(next, vec![1 + 33 * 13]);
    // Near the end of the device the window is cut.
    let mut s = Scan::new(l, 1 + 33 * 3);
    assert_eq!(std::iter::from_fn(|| s.next_prefetch()).count(), 3);
}

#[test]
fn a_wider_prefetch_window_reads_further_ahead_within_its_bound() {
    assert_eq!(prefetch_window(layout(8)), 256); // 4 KiB chunks: 1 MiB
    assert_eq!(prefetch_window(layout(128)), 16);
    assert_eq!(prefetch_window(layout(256)), DM_PREFETCH_CHUNKS); // 128 KiB: C's
    assert_eq!(prefetch_window(layout(1 << 21)), DM_PREFETCH_CHUNKS);
    for sectors in [1, 8, 64, 1024] {
        let w = prefetch_window(layout(sectors));
        let bytes = w * u64::from(layout(sectors).chunk_bytes());
        assert!(w == DM_PREFETCH_CHUNKS || (w > DM_PREFETCH_CHUNKS && bytes <= PREFETCH_BYTES));
    }
    let l = layout(1); // stride 33
    let mut s = Scan::new(l, 1 + 33 * 100).with_prefetch_window(40);
    let first: Vec<u64> = std::iter::from_fn(|| s.next_prefetch()).collect();
    assert_eq!(first.len(), 41); // areas 0..=40
    assert_eq!(first[40], 1 + 33 * 40);
    // Cut at the device end like the default window.
    let mut s = Scan::new(l, 1 + 33 * 3).with_prefetch_window(40);
    assert_eq!(std::iter::from_fn(|| s.next_prefetch()).count(), 3);
}

#[test]
fn cleared_garbage_is_written_by_the_first_commit_once() {
    // Garbage after the end marker of the last area is cleared in memory;
    // activation writes nothing (the COW device may be read-only), the
    // first commit writes it before its record, and after that nothing is
    // left to write.
    let l = layout(1);
    let mut area = vec![0u8; 512];
    write_exception(&mut area, 0, ex(7, 2)).unwrap();
    write_exception(&mut area, 5, ex(9, 20)).unwrap();
    let scan = ScanResult {
        current_area: 0,
        current_committed: 1,
        next_free: 3,
        exceptions: 1,
        warning: None,
    };
    let wb = LogicalBlockSize::new(512).unwrap();
    let (s, mut c) = Committer::from_scan(l, wb, &scan, buffers_with(l, wb, area.clone())).unwrap();
    let s = Locked(std::cell::RefCell::new(s));
    assert!(c.cleanup_pending());
    assert_eq!(read_exception(c.area(), 5), Some(Exception::default()));
    let mut img = store_image(l, 100, &[]);
    img[chunk_range(l, 1)].copy_from_slice(&area);
    let mut d = MemDev::new(img);
    let ch = prepare(&s, sectors(&d.img)).unwrap();
    let w = expect_write(c.commit_exception(&s, &mut d, ex(8, ch), true, 0));
    let whole = AreaWrite {
        area: 0,
        chunk: 1,
        offset: 0,
        len: 512,
        sector: 1,
        sectors: 1,
    };
    // The clean-up went synchronously, before the record's write was made.
    assert_eq!(d.ops, [Op::Write(whole)]);
    assert!(!c.cleanup_pending());
    assert_eq!(
        read_exception(&d.img[chunk_range(l, 1)], 5),
        Some(Exception::default())
    );
    assert_eq!(
        read_exception(&d.img[chunk_range(l, 1)], 1),
        Some(Exception::default())
    );
    assert_eq!(*w.write(), whole);
    assert_eq!(settle(&mut c, &s, &mut d, w), [0]);
    assert_eq!(d.ops, [Op::Write(whole), Op::Write(whole)]);
    // The next commit writes its record alone.
    let ch = prepare(&s, sectors(&d.img)).unwrap();
    assert_eq!(
        commit_sync(&mut c, &s, &mut d, ex(9, ch), true, 1),
        Synced::Done(vec![1])
    );
    assert_eq!(d.ops.len(), 3);
    // A clean area asks for nothing.
    let mut clean = vec![0u8; 512];
    write_exception(&mut clean, 0, ex(7, 2)).unwrap();
    let (_, c) = Committer::from_scan(l, wb, &scan, buffers_with(l, wb, clean)).unwrap();
    assert!(!c.cleanup_pending());
    assert_eq!(c.dirty_range(), None);
}

#[test]
fn chunk_bits_find_the_second_use_of_a_chunk() {
    let mut words = vec![0u64; ChunkBits::words_for(200).unwrap()];
    assert_eq!(words.len(), 4);
    let mut bits = ChunkBits::new(&mut words);
    assert_eq!(bits.insert(2), Some(true));
    assert_eq!(bits.insert(200), Some(true));
    assert_eq!(bits.insert(3), Some(true));
    assert_eq!(bits.insert(2), Some(false));
    assert_eq!(bits.insert(256), None, "beyond the words");
    assert!(bits.contains(200) && bits.contains(3));
    assert!(!bits.contains(4) && !bits.contains(256) && !bits.contains(u64::MAX));
    let mut area = vec![0u8; 512];
    write_exception(
        &mut area,
        0,
        Exception {
            old_chunk: 1,
            new_chunk: 2,
        },
    )
    .unwrap();
    write_exception(
        &mut area,
        1,
        Exception {
            old_chunk: 5,
            new_chunk: 3,
        },
    )
    .unwrap();
    write_exception(
        &mut area,
        3,
        Exception {
            old_chunk: 6,
            new_chunk: 9,
        },
    )
    .unwrap();
    assert_eq!(find_new_chunk(&area, 3, 0), Some(1));
    assert_eq!(find_new_chunk(&area, 3, 2), None);
    assert_eq!(find_new_chunk(&area, 9, 0), None, "after the end marker");
}

/// A record seen by the checking walk: area, index, record, broken rule.
type Checked = (u64, u32, Exception, Option<Error>);

/// Runs the checking walk ([`Scan::check_area`]) over a whole image:
/// every record before an end marker, with the rule it breaks, and the
/// scan's result.
fn check_all(img: &[u8], l: Layout) -> (Vec<Checked>, ScanResult) {
    let mut scan = Scan::new(l, sectors(img));
    let mut area = vec![0u8; usize::try_from(l.chunk_bytes()).unwrap()];
    let mut seen = vec![];
    loop {
        let io = scan.next_area().unwrap();
        read_chunk(img, l, io.chunk, &mut area).unwrap();
        let fill = scan
            .check_area(&area, |index, e, broken| {
                seen.push((io.area, index, e, broken))
            })
            .unwrap();
        match fill {
            AreaFill::Full(next) => scan = next,
            AreaFill::Partial(r) => return (seen, r),
        }
    }
}

#[test]
fn checking_walk_goes_past_broken_records_and_its_first_is_the_scans_error() {
    let l = layout(1); // 32 per area; area 1 is chunk 34
    let mut full = in_order(l, 32, |k| 1000 + k).concat();
    full[3] = ex(5, 34); // on area 1
    full[7] = ex(6, 500); // past the device
    let img = store_image(l, 100, &[full.clone(), vec![ex(9, 40), ex(10, 41)]]);
    let strict = scan(&img, l).unwrap_err();
    let (seen, r) = check_all(&img, l);
    assert_eq!(seen.len(), 34);
    let broken: Vec<_> = seen
        .iter()
        .filter_map(|(a, i, _, b)| b.map(|b| (*a, *i, b)))
        .collect();
    assert_eq!(broken.len(), 2);
    assert_eq!(broken[0], (0, 3, strict));
    assert!(matches!(
        broken[1],
        (0, 7, Error::NewChunkBeyondDevice { new_chunk: 500, .. })
    ));
    // The walk ends at the second area's marker; the broken records do not
    // count as exceptions.
    assert_eq!(
        (r.current_area, r.current_committed, r.exceptions),
        (1, 2, 32)
    );
    assert_eq!(r.warning, None);
}

#[test]
fn checking_walk_reports_the_same_garbage_warning_as_the_scan() {
    let l = layout(1);
    let mut img = store_image(l, 100, &[vec![ex(1, 2), ex(2, 3)]]);
    let base = chunk_range(l, 1).start;
    write_exception(&mut img[base..base + 512], 6, ex(7, 40)).unwrap();
    let (r, _, _) = scan(&img, l).unwrap();
    let (seen, checked) = check_all(&img, l);
    assert_eq!(seen.len(), 2);
    assert!(r.warning.is_some());
    assert_eq!(checked.warning, r.warning);
    assert_eq!(checked, r);
}

#[test]
fn failed_cleanup_invalidates_and_no_record_is_written() {
    let l = layout(1);
    let mut img = store_image(l, 100, &[vec![ex(1, 2)]]);
    let base = chunk_range(l, 1).start;
    write_exception(&mut img[base..base + 512], 4, ex(9, 5)).unwrap();
    let (s, mut c) = load(&img, l, LogicalBlockSize::SECTOR);
    let mut d = MemDev::new(img.clone());
    d.fail_write = true;
    let ch = prepare(&s, sectors(&img)).unwrap();
    // The commit goes through as a failed one: only the cleanup write was
    // tried, and the completion is due at once.
    let Commit::Due(due) = c.commit_exception(&s, &mut d, ex(3, ch), true, 0) else {
        panic!("expected the completion due at once");
    };
    assert_eq!(d.ops.len(), 1);
    assert!(matches!(d.ops[0], Op::Write(_)));
    assert_eq!(
        d.reports,
        [Error::CleanupFailed {
            area: 0,
            errno: errno::EIO
        }]
    );
    assert!(!s.get().is_valid());
    assert!(!c.cleanup_pending());
    let (due, next) = take_due(&mut c, &s, due);
    assert_eq!(due, [0]);
    assert!(next.is_none());
    assert!(c.is_idle());
    assert_eq!(d.img, img);
    // Nothing more is written.
    d.fail_write = false;
    let ch = prepare(&s, sectors(&img)).unwrap();
    assert_eq!(
        commit_sync(&mut c, &s, &mut d, ex(4, ch), true, 1),
        Synced::Done(vec![1])
    );
    assert_eq!(d.ops.len(), 1);
}

#[test]
fn a_merge_write_carries_the_cleanup() {
    let l = layout(1);
    let mut img = store_image(l, 100, &[vec![ex(1, 2), ex(2, 3)]]);
    let base = chunk_range(l, 1).start;
    write_exception(&mut img[base..base + 512], 6, ex(9, 5)).unwrap();
    let (s, mut c) = load(&img, l, LogicalBlockSize::SECTOR);
    let mut d = MemDev::new(img);
    let run = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .expect("a run in memory");
    assert_eq!(run.count, 2);
    assert!(d.ops.is_empty());
    c.merger().unwrap().commit_merge(&s, &mut d, 1).unwrap();
    let w = writes(&d.ops);
    assert_eq!(w.len(), 1);
    assert!(w[0].range().unwrap().contains(&(6 * 16)));
    assert!(!c.cleanup_pending());
    assert_eq!(
        read_exception(&d.img[base..base + 512], 6),
        Some(Exception::default())
    );
    // The next commit writes only its record.
    let ch = prepare(&s, sectors(&d.img)).unwrap();
    assert_eq!(
        commit_sync(&mut c, &s, &mut d, ex(5, ch), true, 0),
        Synced::Done(vec![0])
    );
    assert_eq!(writes(&d.ops).len(), 2);
}

#[test]
fn garbage_in_an_area_merged_away_is_zeroed_before_it_is_reused() {
    // The scan stops in empty area 1 with garbage after its end marker;
    // merging steps back to area 0, and area 1 is zeroed on disk when
    // area 0 fills again, not by a write of a stale buffer.
    let l = layout(1);
    let areas = in_order(l, 32, |k| 100 + k);
    let mut img = store_image(l, 100, &areas);
    let base = chunk_range(l, 34).start;
    write_exception(&mut img[base..base + 512], 3, ex(9, 40)).unwrap();
    let (s, mut c) = load(&img, l, LogicalBlockSize::SECTOR);
    assert!(c.cleanup_pending());
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    let mut d = MemDev::new(img);
    let run = c
        .merger()
        .unwrap()
        .prepare_merge(&s, &mut d)
        .unwrap()
        .unwrap();
    assert_eq!(run.count, 32);
    assert!(!c.cleanup_pending());
    c.merger().unwrap().commit_merge(&s, &mut d, 1).unwrap();
    assert_eq!(s.get().next_free(), 33);
    assert_eq!(
        read_exception(&d.img[base..base + 512], 3),
        Some(ex(9, 40)),
        "area 1 is not written while area 0 is current"
    );
    let ch = prepare(&s, sectors(&d.img)).unwrap();
    assert_eq!(ch, 33);
    let w = expect_write(c.commit_exception(&s, &mut d, ex(7, ch), true, 0));
    assert_eq!(w.zero_first(), Some(l.area_io(1).unwrap()));
    assert_eq!(d.ops.len(), 2, "nothing written before the write is issued");
    assert_eq!(
        read_exception(&d.img[base..base + 512], 3),
        Some(ex(9, 40)),
        "area 1 is zeroed by the write that fills area 0"
    );
    assert_eq!(settle(&mut c, &s, &mut d, w), [0]);
    assert_eq!(
        d.ops[2..],
        [
            Op::Zero(l.area_io(1).unwrap()),
            Op::Write(AreaWrite {
                area: 0,
                chunk: 1,
                offset: 0,
                len: 512,
                sector: 1,
                sectors: 1
            })
        ]
    );
    assert!(d.img[base..base + 512].iter().all(|b| *b == 0));
    assert_eq!((c.current_area(), c.current_committed()), (1, 0));
    let (r, seen, _) = scan(&d.img, l).unwrap();
    assert_eq!(seen.len(), 32);
    assert_eq!(r.warning, None);
}

#[test]
fn in_order_bound_covers_every_chunk_an_area_can_use() {
    for sectors in [1u32, 8, 1024] {
        let l = layout(sectors);
        let epa = u64::from(l.exceptions_per_area());
        let areas = in_order(l, 3 * epa, |k| k);
        for (k, es) in areas.iter().enumerate() {
            let bound = in_order_bound(l, k as u64).unwrap();
            assert!(es.iter().all(|e| e.new_chunk < bound), "area {k}");
            assert_eq!(bound, l.area_location(k as u64 + 1).unwrap());
        }
    }
    assert_eq!(in_order_bound(layout(1), u64::MAX), None);
}

#[test]
fn a_shrunk_cow_is_told_how_large_it_must_be() {
    // 512-byte chunks: area 0 at chunk 1 holds 32 exceptions (chunks 2..33),
    // area 1 at chunk 34 holds 5 (chunks 35..39). The device had 64 chunks.
    let l = layout(1);
    let areas = in_order(l, 37, |k| k);
    let img = store_image(l, 64, &areas);
    // Shrunk to 37 chunks: area 1 is on it, its last two records are not.
    let small = &img[..37 * 512];
    let mut area = vec![0u8; 512];
    let mut s = Scan::new(l, 37);
    let advice = loop {
        let io = s.next_area().unwrap();
        read_chunk(small, l, io.chunk, &mut area).unwrap();
        match s.validate_area(&area) {
            Ok(AreaFill::Full(next)) => s = next,
            Ok(AreaFill::Partial(r)) => panic!("scanned to the end: {r:?}"),
            Err(Stopped { stop: e, scan }) => {
                assert!(
                    matches!(e, Error::NewChunkBeyondDevice { area: 1, .. }),
                    "{e}"
                );
                break scan.cow_too_small(&e, Some(&area));
            }
        }
    };
    let advice = advice.expect("advice");
    assert_eq!(
        advice,
        CowTooSmall {
            cow_sectors: 37,
            needed_sectors: 40,
            exact: true
        }
    );
    assert_eq!(
        advice.to_string(),
        "COW device of 37 sectors is too small for its exceptions: it must have 40 sectors or more to load"
    );
    // Shrunk to 30 chunks: area 0 is full and points past the end, area 1
    // cannot be read: at least through area 1's chunk.
    let s = Scan::new(l, 30);
    let io = s.next_area().unwrap();
    read_chunk(&img, l, io.chunk, &mut area).unwrap();
    let Stopped { stop: e, scan: s } = s.validate_area(&area).unwrap_err();
    let advice = s.cow_too_small(&e, Some(&area)).unwrap();
    assert_eq!((advice.needed_sectors, advice.exact), (35, false));
    assert!(advice.to_string().contains("at least 35 sectors"));
    // Shrunk to 34 chunks: area 0 is fine, area 1 is past the end.
    let s = Scan::new(l, 34);
    let io = s.next_area().unwrap();
    read_chunk(&img, l, io.chunk, &mut area).unwrap();
    let AreaFill::Full(s) = s.validate_area(&area).unwrap() else {
        panic!("area 0 is full");
    };
    let e = s.next_area().unwrap_err();
    let advice = s.cow_too_small(&e, None).unwrap();
    assert_eq!(
        (advice.cow_sectors, advice.needed_sectors, advice.exact),
        (34, 35, false)
    );
    // Other errors get no advice.
    assert_eq!(s.cow_too_small(&Error::Overflow, None), None);
}
