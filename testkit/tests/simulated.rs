// SPDX-License-Identifier: GPL-2.0-only

//! The replayer and the oracle on logs of a simulated store, with the
//! snapshot's view computed from the replayed images by the format core's
//! activation scan instead of a kernel: a store that commits before it lets
//! the origin write go loses nothing at any point; one that lets the origin
//! write reach the disk first is caught, and so is a dropped commit.

use snap_format::read_header;
use snap_format::scan_areas;
use snap_format::BlockSizes;
use snap_format::ChunkSize;
use snap_format::DiskHeader;
use snap_format::Exception;
use snap_format::HeaderDecision;
use snap_format::Layout;
use snap_format::TableChunkSize;
use snap_format::INITIAL_NEXT_FREE;
use snap_format::SECTOR_SIZE;
use snap_testkit::log::Log;
use snap_testkit::log::LogBuilder;
use snap_testkit::log::FLUSH;
use snap_testkit::log::FUA;
use snap_testkit::oracle::Oracle;
use snap_testkit::replay::crash_points;
use snap_testkit::replay::Geometry;
use snap_testkit::replay::PointOptions;
use snap_testkit::replay::Replayer;
use snap_testkit::tag::Kind;
use snap_testkit::tag::Tag;

/// The simulated store's layout: 4 KiB chunks.
const LAYOUT: Layout = Layout::new(match ChunkSize::new(8, BlockSizes::SECTOR) {
    Ok(c) => c,
    Err(_) => panic!("8 sectors is a chunk size"),
});
const CHUNK: u64 = LAYOUT.chunk_bytes() as u64;
const SECTOR: usize = SECTOR_SIZE as usize;
const GEO: Geometry = Geometry {
    origin_start: 0,
    origin_len: 8 * CHUNK,
    cow_start: 8 * CHUNK,
    cow_len: 16 * CHUNK,
};

/// The snapshot's view of an origin and COW image, as an activation of the
/// store would give it; `None` if the store is invalid.
fn view(origin: &[u8], cow: &[u8]) -> Option<Vec<u8>> {
    let table = TableChunkSize::new(8, BlockSizes::SECTOR).unwrap();
    let layout = match read_header(&cow[..SECTOR], table, BlockSizes::SECTOR, |_| {}).unwrap() {
        HeaderDecision::New(_) => return Some(origin.to_vec()),
        HeaderDecision::Invalid(_) => return None,
        HeaderDecision::Valid(l) => l,
    };
    let mut area = vec![0u8; layout.chunk_bytes() as usize];
    let mut exceptions = Vec::new();
    let read = |chunk: u64, buf: &mut [u8]| {
        let at = (chunk * CHUNK) as usize;
        buf.copy_from_slice(cow.get(at..at + buf.len()).ok_or(5)?);
        Ok(())
    };
    scan_areas(layout, (cow.len() / SECTOR) as u64, &mut area, read, |e| {
        exceptions.push(e);
        Ok(())
    })
    .unwrap();
    let mut v = origin.to_vec();
    for e in exceptions {
        let (o, n) = (
            (e.old_chunk * CHUNK) as usize,
            (e.new_chunk * CHUNK) as usize,
        );
        v[o..o + CHUNK as usize].copy_from_slice(&cow[n..n + CHUNK as usize]);
    }
    Some(v)
}

/// The log of a store serving origin writes to chunks 3, 5 and 3 again.
/// `commit_first`: the exception is durable before the origin write is let
/// go (what a store must do); otherwise the origin write completes and is
/// flushed before the commit.
fn simulated_log(commit_first: bool) -> Log {
    let mut b = LogBuilder::new(512);
    let pattern: Vec<u8> = (0..8)
        .flat_map(|c| {
            Tag {
                kind: Kind::Pattern,
                id: 0,
                offset: c * CHUNK,
            }
            .block()
        })
        .collect();
    b.write(0, 0, &pattern).flush().mark("setup-done");
    // A new store: zeroed area 0, then the header.
    let area0 = GEO.cow_start + LAYOUT.area_location(0).unwrap() * CHUNK;
    b.write(area0, 0, &[0u8; CHUNK as usize]).flush();
    let mut header = vec![0u8; SECTOR];
    DiskHeader::new(true, LAYOUT.chunk_size())
        .encode(&mut header)
        .unwrap();
    b.write(GEO.cow_start, FLUSH | FUA, &header);
    let mut area = vec![0u8; CHUNK as usize];
    let mut next_new = INITIAL_NEXT_FREE;
    let mut excepted = Vec::new();
    for (id, c) in [(1u64, 3u64), (2, 5), (3, 3)] {
        let data = Tag {
            kind: Kind::Origin,
            id,
            offset: c * CHUNK,
        }
        .block();
        if excepted.contains(&c) {
            b.write(c * CHUNK, 0, &data)
                .mark(&format!("ack-{id}"))
                .flush();
            continue;
        }
        // Copy the old chunk to the COW device.
        let old = Tag {
            kind: Kind::Pattern,
            id: 0,
            offset: c * CHUNK,
        }
        .block();
        b.write(GEO.cow_start + next_new * CHUNK, 0, &old);
        let i = excepted.len() as u32;
        snap_format::write_exception(
            &mut area,
            i,
            Exception {
                old_chunk: c,
                new_chunk: next_new,
            },
        )
        .unwrap();
        if commit_first {
            b.flush().write(area0, FUA, &area[..SECTOR]);
            b.mark(&format!("ack-{id}"))
                .write(c * CHUNK, 0, &data)
                .flush();
        } else {
            b.write(c * CHUNK, 0, &data)
                .flush()
                .mark(&format!("ack-{id}"));
            b.write(area0, FUA, &area[..SECTOR]);
        }
        excepted.push(c);
        next_new += 1;
    }
    Log::parse(&b.build()[..]).unwrap()
}

/// Replays `log` (leaving out the entries `dropped`) at its points: (points, lost).
fn replay_all(log: &Log, dropped: Vec<usize>) -> (usize, usize) {
    let from = log.find_mark("setup-done").unwrap();
    let mut r = Replayer::new(log, GEO);
    r.drop_entries(dropped);
    let original = r.advance(from + 1).origin.clone();
    let oracle = Oracle::new(log, &GEO, original, r.acks());
    let opts = PointOptions {
        from: from + 1,
        durable: false,
        mark_plus: true,
        torn: true,
        every: true,
    };
    let points = crash_points(log, &opts);
    let mut lost = 0;
    for &p in &points {
        let st = r.state(p);
        if let Some(v) = view(&st.origin, &st.cow) {
            if oracle.check(p, &v).is_err() {
                lost += 1;
            }
        }
    }
    (points.len(), lost)
}

#[test]
fn a_store_that_commits_first_loses_nothing() {
    let (points, lost) = replay_all(&simulated_log(true), vec![]);
    assert!(points > 15, "{points} points");
    assert_eq!(lost, 0);
}

#[test]
fn a_store_that_lets_the_origin_write_go_first_is_caught() {
    let (points, lost) = replay_all(&simulated_log(false), vec![]);
    assert!(points > 15, "{points} points");
    assert!(lost > 0, "no lost point out of {points}");
}

#[test]
fn a_dropped_commit_is_caught() {
    let log = simulated_log(true);
    let commit = log.entries.iter().position(|e| e.flags == FUA).unwrap();
    let (_, lost) = replay_all(&log, vec![commit]);
    assert!(lost > 0);
}
