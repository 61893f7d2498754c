// SPDX-License-Identifier: GPL-2.0-only

//! The subset model and its format-level judgement on logs of a simulated
//! store, logged the way dm-log-writes logs them (plain writes held until
//! the next flush, FUA writes and marks at once): a store that commits
//! before it lets the origin writes go loses no subset state; one that lets
//! them go first is caught, and so are a commit left out and a commit
//! treated as a plain write (the self-test of `crash_replay
//! --plain-commit`).

use snap_format::write_exception;
use snap_format::BlockSizes;
use snap_format::ChunkSize;
use snap_format::DiskHeader;
use snap_format::Exception;
use snap_format::Layout;
use snap_format::INITIAL_NEXT_FREE;
use snap_format::SECTOR_SIZE;
use snap_testkit::judge::Judge;
use snap_testkit::judge::Judgement;
use snap_testkit::log::Log;
use snap_testkit::log::LogBuilder;
use snap_testkit::log::FLUSH;
use snap_testkit::log::FUA;
use snap_testkit::oracle::Cut;
use snap_testkit::oracle::Oracle;
use snap_testkit::replay::ack_marks;
use snap_testkit::replay::commit_writes;
use snap_testkit::replay::Geometry;
use snap_testkit::replay::Images;
use snap_testkit::subset::Model;
use snap_testkit::subset::ModelOptions;
use snap_testkit::subset::SubsetJudge;
use snap_testkit::subset::DEFAULT_SEED;
use snap_testkit::tag::Kind;
use snap_testkit::tag::Rng;
use snap_testkit::tag::Tag;

/// The simulated store's layout: 4 KiB chunks.
const LAYOUT: Layout = Layout::new(match ChunkSize::new(8, BlockSizes::SECTOR) {
    Ok(c) => c,
    Err(_) => panic!("8 sectors is a chunk size"),
});
const CHUNK: u64 = LAYOUT.chunk_bytes() as u64;
const GEO: Geometry = Geometry {
    origin_start: 0,
    origin_len: 64 * CHUNK,
    cow_start: 64 * CHUNK,
    cow_len: 128 * CHUNK,
};

fn tag(kind: Kind, id: u64, chunk: u64) -> Vec<u8> {
    Tag {
        kind,
        id,
        offset: chunk * CHUNK,
    }
    .block()
}

/// A log written the way dm-log-writes writes it.
struct Recorder {
    b: LogBuilder,
    /// Completed plain writes, logged at the next flush.
    unflushed: Vec<(u64, Vec<u8>)>,
}

impl Recorder {
    fn plain(&mut self, offset: u64, data: Vec<u8>) {
        self.unflushed.push((offset, data));
    }

    fn flush_write(&mut self, offset: u64, flags: u64, data: &[u8]) {
        for (o, d) in self.unflushed.drain(..) {
            self.b.write(o, 0, &d);
        }
        self.b.write(offset, flags, data);
    }

    fn flush(&mut self) {
        for (o, d) in self.unflushed.drain(..) {
            self.b.write(o, 0, &d);
        }
        self.b.flush();
    }
}

/// The log of a store serving `writes` origin writes to random chunks,
/// `depth` at a time. `commit_first`: each batch's exceptions are
/// committed (copies, then `REQ_PREFLUSH | REQ_FUA` on the area) before its
/// origin writes are let go; otherwise the origin writes complete and are
/// acknowledged first.
fn simulated_log(writes: u64, depth: u64, commit_first: bool, seed: u64) -> Log {
    let mut r = Recorder {
        b: LogBuilder::new(512),
        unflushed: Vec::new(),
    };
    let chunks = GEO.origin_len / CHUNK;
    let pattern: Vec<u8> = (0..chunks).flat_map(|c| tag(Kind::Pattern, 0, c)).collect();
    r.b.write(0, 0, &pattern).flush().mark("setup-done");
    // A new store: zeroed area 0, then the header. The exceptions all fit
    // area 0: its data chunks follow it.
    let area0 = GEO.cow_start + LAYOUT.area_location(0).unwrap() * CHUNK;
    r.plain(area0, vec![0u8; CHUNK as usize]);
    let mut header = vec![0u8; SECTOR_SIZE as usize];
    DiskHeader::new(true, LAYOUT.chunk_size())
        .encode(&mut header)
        .unwrap();
    r.flush_write(GEO.cow_start, FLUSH | FUA, &header);
    let mut area = vec![0u8; CHUNK as usize];
    let mut excepted = Vec::new();
    let mut rng = Rng::new(seed);
    let mut id = 1;
    while id <= writes {
        let batch: Vec<(u64, u64)> = (id..=writes.min(id + depth - 1))
            .map(|i| (i, rng.below(chunks)))
            .collect();
        id += batch.len() as u64;
        let mut copies = false;
        for &(_, c) in &batch {
            if excepted.contains(&c) {
                continue;
            }
            let new_chunk = INITIAL_NEXT_FREE + excepted.len() as u64;
            r.plain(GEO.cow_start + new_chunk * CHUNK, tag(Kind::Pattern, 0, c));
            let e = Exception {
                old_chunk: c,
                new_chunk,
            };
            write_exception(&mut area, excepted.len() as u32, e).unwrap();
            excepted.push(c);
            copies = true;
        }
        if !commit_first {
            origin_writes(&mut r, &batch);
        }
        if copies {
            r.flush_write(area0, FLUSH | FUA, &area);
        }
        if commit_first {
            origin_writes(&mut r, &batch);
        }
    }
    r.flush();
    Log::parse(&r.b.build()[..]).unwrap()
}

/// The batch's origin writes, each acknowledged, completing in reverse.
fn origin_writes(r: &mut Recorder, batch: &[(u64, u64)]) {
    for &(id, c) in batch.iter().rev() {
        r.plain(c * CHUNK, tag(Kind::Origin, id, c));
        r.b.mark(&format!("ack-{id}"));
    }
}

/// The oracle of `log` and its subset model.
fn setup<'l>(log: &'l Log, opts: &ModelOptions) -> (Oracle, Model<'l>) {
    let from = log.find_mark("setup-done").unwrap();
    let mut prefix = Images::zeroed(&GEO);
    for e in &log.entries[..=from] {
        prefix.apply(&GEO, e, None);
    }
    let oracle = Oracle::new(log, &GEO, prefix.origin, &ack_marks(log));
    let opts = ModelOptions {
        from: from + 1,
        ..opts.clone()
    };
    (oracle, Model::new(log, GEO, &opts))
}

/// What the subset states of `log` come to: (states, lost, invalid).
fn judge_all(log: &Log, opts: &ModelOptions) -> (usize, usize, usize) {
    let (oracle, model) = setup(log, opts);
    let states = model.states(DEFAULT_SEED);
    let mut judge = SubsetJudge::new(&model, BlockSizes::SECTOR);
    let (mut lost, mut invalid) = (0, 0);
    for st in &states {
        match judge.judge(&oracle, st, |_, _, _| ()).0 {
            Judgement::Good => {}
            Judgement::Invalid => invalid += 1,
            Judgement::Lost(_) => lost += 1,
        }
    }
    (states.len(), lost, invalid)
}

/// Judges every state of `log` in full, each block of its view, and
/// checks that the judgement over the floor's says the same.
fn same_judgements_in_full(log: &Log, opts: &ModelOptions) -> usize {
    let (oracle, model) = setup(log, opts);
    let states = model.states(DEFAULT_SEED);
    let mut over = SubsetJudge::new(&model, BlockSizes::SECTOR);
    let mut full = Judge::new(BlockSizes::SECTOR);
    let mut lost = 0;
    for st in &states {
        let holds = |e: usize| st.holds(e);
        let cut = Cut {
            acked_by: st.point.entry,
            holds: &holds,
        };
        let (j, f) = over.judge(&oracle, st, |_, o, c| full.judge(&oracle, &cut, o, c));
        assert_eq!(j.is_lost(), f.is_lost(), "{st}: {j:?} against {f:?}");
        lost += usize::from(f.is_lost());
    }
    lost
}

#[test]
fn a_store_that_commits_first_loses_no_subset_state() {
    for (depth, seed) in [(1, 1), (4, 2), (16, 3)] {
        let log = simulated_log(24, depth, true, seed);
        let (states, lost, invalid) = judge_all(&log, &ModelOptions::default());
        assert!(states > 40, "depth {depth}: {states} states");
        assert_eq!((lost, invalid), (0, 0), "depth {depth} of {states} states");
    }
}

#[test]
fn a_store_that_lets_origin_writes_go_first_is_caught() {
    let log = simulated_log(24, 4, false, 2);
    let (states, lost, _) = judge_all(&log, &ModelOptions::default());
    assert!(lost > 0, "no loss in {states} states");
}

#[test]
fn a_commit_treated_as_a_plain_write_is_caught() {
    let log = simulated_log(24, 1, true, 1);
    let commit = commit_writes(&log, &GEO, 0)[2];
    let opts = ModelOptions {
        plain: Some(commit),
        ..ModelOptions::default()
    };
    let (states, lost, _) = judge_all(&log, &opts);
    assert!(lost > 0, "no loss in {states} states");
}

#[test]
fn a_dropped_commit_is_caught() {
    let log = simulated_log(24, 1, true, 1);
    let commit = commit_writes(&log, &GEO, 0)[2];
    let opts = ModelOptions {
        dropped: vec![commit],
        ..ModelOptions::default()
    };
    let (_, lost, _) = judge_all(&log, &opts);
    assert!(lost > 0);
}

#[test]
fn large_batches_are_sampled_not_enumerated() {
    let log = simulated_log(48, 16, true, 9);
    let (states, lost, _) = judge_all(&log, &ModelOptions::default());
    assert_eq!(lost, 0);
    // Batches of 16 copies and 16 origin writes: far fewer states than
    // every subset of them.
    assert!(states > 256 && states < 20_000, "{states} states");
}

#[test]
fn judging_over_the_floor_agrees_with_judging_every_block() {
    let mut lost = 0;
    for (depth, first, seed) in [(1, true, 1), (4, false, 2), (16, true, 3), (16, false, 4)] {
        let log = simulated_log(24, depth, first, seed);
        lost += same_judgements_in_full(&log, &ModelOptions::default());
        let commit = commit_writes(&log, &GEO, 0)[1];
        let plain = ModelOptions {
            plain: Some(commit),
            ..ModelOptions::default()
        };
        lost += same_judgements_in_full(&log, &plain);
    }
    assert!(lost > 0);
}
