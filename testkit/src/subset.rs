// SPDX-License-Identifier: GPL-2.0-only

//! Subset crash states: the model of CrashMonkey (Mohan et al., "Finding
//! Crash-Consistency Bugs with Bounded Black-Box Crash Testing", OSDI 2018).
//!
//! dm-log-writes logs a plain write only when the next flush completes, so
//! a log prefix shows one order of the writes a flush makes durable. A disk
//! with a volatile cache may have written any of them before a crash, in
//! any order. At a [`SubsetPoint`] (each flush, just before and just after
//! it completes; each FUA write; each acknowledgement mark) the disk holds:
//!
//! - every entry made durable by then: the log before the last completed
//!   flush, every FUA write (and flush with data) logged so far;
//! - any subset of the plain writes known to have completed by then but not
//!   yet made durable: before a flush completes, its batch (the plain writes
//!   logged just before it); at any point, the plain writes logged later
//!   whose acknowledgement mark came before the point (they completed
//!   before it, but sit in the batch of a later flush).
//!
//! The writes of a subset are applied in log order, so of two writes to the
//! same block the later one wins when both are kept. Keeping the later one
//! and leaving out the earlier one is a state too (the later one reached
//! the platter, the earlier one never did, or did and was overwritten), and
//! so is keeping only the earlier one. The reverse order of two overlapping
//! writes (the earlier one landing last) is not built: a plain write is
//! logged at completion, and no one issues an overlapping write while
//! another is in flight (the workload waits for a block's acknowledgement
//! before writing it again; a store writes a metadata block again only
//! after the last write of it completed).
//!
//! Of the states that have the same images, only the one at the latest
//! point is kept (see [`Model::states`]).
//!
//! [`Model`] classifies the entries and lists the states, [`Materializer`]
//! builds each state's images on top of a shared floor and takes its writes
//! back afterwards, so that a state costs the bytes of its own writes, and
//! [`SubsetJudge`] judges them at the format level, checking again only the
//! blocks of the snapshot's view that a state's own writes can change.

#![forbid(unsafe_code)]

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::collections::HashSet;
use std::fmt;

use snap_format::BlockSizes;

use crate::judge::Judge;
use crate::judge::Judgement;
use crate::judge::Written;
use crate::log::Log;
use crate::log::DISCARD;
use crate::log::FLUSH;
use crate::log::FUA;
use crate::oracle::Cut;
use crate::oracle::Oracle;
use crate::replay::tagged_blocks;
use crate::replay::Geometry;
use crate::replay::Images;
use crate::replay::Slice;
use crate::replay::ACK_PREFIX;
use crate::tag::Kind;
use crate::tag::Rng;

/// Up to this many pending writes, every subset is a state.
pub const EXHAUSTIVE_MAX: usize = 10;

/// Random subsets drawn when there are more pending writes.
pub const RANDOM_SUBSETS: usize = 256;

/// The seed of the random subsets unless another is given.
pub const DEFAULT_SEED: u64 = 0x5eed_c4a5_0000_0001;

/// When, relative to a log entry, a subset state is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Moment {
    /// Just before a flush completes: its batch is not durable yet.
    BeforeFlush,
    /// Just after a flush completed.
    AfterFlush,
    /// Just after a FUA write completed.
    Fua,
    /// At an acknowledgement mark.
    Ack,
}

impl Moment {
    /// Name used in messages.
    pub const fn name(self) -> &'static str {
        match self {
            Self::BeforeFlush => "before-flush",
            Self::AfterFlush => "after-flush",
            Self::Fua => "after-fua",
            Self::Ack => "at-ack",
        }
    }
}

/// A point of the log at which subset states are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubsetPoint {
    /// Index of the log entry.
    pub entry: usize,
    /// When, relative to it.
    pub moment: Moment,
}

impl SubsetPoint {
    /// The entries logged before this index happened before the point.
    pub const fn limit(self) -> usize {
        match self.moment {
            Moment::BeforeFlush => self.entry,
            _ => self.entry + 1,
        }
    }
}

impl fmt::Display for SubsetPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {} (subset {})", self.entry, self.moment.name())
    }
}

/// How a log entry reaches the disk in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// No data: a mark, an empty flush, an entry left out of the replay.
    NoData,
    /// Durable once logged: a FUA write or a flush with data.
    Ordered,
    /// A plain write or discard.
    Plain {
        /// Earliest entry index at which it is known to have completed: its
        /// own, or its acknowledgement mark's if that came first.
        known_at: usize,
        /// The flush that makes it durable when it completes, if any.
        durable_at: Option<usize>,
    },
}

/// What the model is built from, besides the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelOptions {
    /// No points before this entry index.
    pub from: usize,
    /// Entries left out of every state (`--drop-commit`).
    pub dropped: Vec<usize>,
    /// An entry to treat as a plain write even though it carries FUA or a
    /// flush (the self-test: a commit the disk may lose).
    pub plain: Option<usize>,
}

/// One subset crash state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubsetState {
    /// Where it is taken.
    pub point: SubsetPoint,
    /// Every data entry before this index is in the state.
    pub floor: usize,
    /// The data entries from `floor` on that are in the state, in log
    /// order.
    pub applied: Vec<usize>,
    /// How many writes were pending at the point.
    pub pending: usize,
    /// The pending writes left out.
    pub left_out: Vec<usize>,
}

impl SubsetState {
    /// Whether the state holds the data of log entry `entry`.
    pub fn holds(&self, entry: usize) -> bool {
        entry < self.floor || self.applied.binary_search(&entry).is_ok()
    }

    /// Whether the state keeps any pending write.
    pub fn keeps_any(&self) -> bool {
        self.left_out.len() < self.pending
    }
}

impl fmt::Display for SubsetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        let kept = self.pending.saturating_sub(self.left_out.len());
        write!(
            f,
            "{}: {kept} of {} pending writes",
            self.point, self.pending
        )?;
        if self.left_out.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = self
            .left_out
            .iter()
            .take(SHOWN)
            .map(ToString::to_string)
            .collect();
        let more = if self.left_out.len() > SHOWN {
            ", …"
        } else {
            ""
        };
        write!(f, ", without entries {}{more}", names.join(", "))
    }
}

/// The entries a point's states are built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidates {
    /// Every data entry before this index is in every state of the point.
    pub floor: usize,
    /// The data entries from `floor` on that are in every state.
    pub base: Vec<usize>,
    /// The pending writes, any subset of which is a state.
    pub pending: Vec<usize>,
}

/// The subset model of a log.
pub struct Model<'l> {
    log: &'l Log,
    geo: Geometry,
    roles: Vec<Role>,
    /// Indices of the plain entries, in log order.
    plains: Vec<usize>,
    /// Acknowledgement marks at or before each index.
    acks_upto: Vec<u32>,
    points: Vec<SubsetPoint>,
}

impl<'l> Model<'l> {
    /// The model of `log`, whose device holds the slices of `geo`.
    pub fn new(log: &'l Log, geo: Geometry, opts: &ModelOptions) -> Self {
        let n = log.entries.len();
        let is_flush = |i: usize| log.entries[i].flags & FLUSH != 0 && opts.plain != Some(i);
        let known = acknowledged_entries(log, &geo);
        let mut roles = vec![Role::NoData; n];
        let mut next_flush = None;
        for i in (0..n).rev() {
            let e = &log.entries[i];
            let data = e.len > 0 && (e.is_write() || e.flags & DISCARD != 0);
            roles[i] = if !data || opts.dropped.contains(&i) {
                Role::NoData
            } else if e.flags & (FLUSH | FUA) == 0 || opts.plain == Some(i) {
                Role::Plain {
                    known_at: known.get(&i).map_or(i, |&a| a.min(i)),
                    durable_at: next_flush,
                }
            } else {
                Role::Ordered
            };
            if is_flush(i) {
                next_flush = Some(i);
            }
        }
        let mut acks_upto = Vec::with_capacity(n);
        let mut points = Vec::new();
        let mut acks = 0u32;
        for (i, e) in log.entries.iter().enumerate() {
            let ack = e.mark.as_deref().is_some_and(|m| m.starts_with(ACK_PREFIX));
            acks += u32::from(ack);
            acks_upto.push(acks);
            if i < opts.from {
                continue;
            }
            let moments: &[Moment] = if is_flush(i) {
                &[Moment::BeforeFlush, Moment::AfterFlush]
            } else if roles[i] == Role::Ordered && e.flags & FUA != 0 {
                &[Moment::Fua]
            } else if ack {
                &[Moment::Ack]
            } else {
                &[]
            };
            points.extend(
                moments
                    .iter()
                    .map(|&moment| SubsetPoint { entry: i, moment }),
            );
        }
        let plains = (0..n)
            .filter(|&i| matches!(roles[i], Role::Plain { .. }))
            .collect();
        Self {
            log,
            geo,
            roles,
            plains,
            acks_upto,
            points,
        }
    }

    /// The log.
    pub fn log(&self) -> &'l Log {
        self.log
    }

    /// The slices of the logged device.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// The points, in log order.
    pub fn points(&self) -> &[SubsetPoint] {
        &self.points
    }

    /// Whether entry `i` puts data on the disk in the model.
    pub fn has_data(&self, i: usize) -> bool {
        self.roles.get(i).is_some_and(|r| *r != Role::NoData)
    }

    /// The entries the states of point `p` are built from.
    pub fn candidates(&self, p: SubsetPoint) -> Candidates {
        let limit = p.limit();
        let durable = |durable_at: Option<usize>| {
            durable_at
                .is_some_and(|f| f < p.entry || (f == p.entry && p.moment != Moment::BeforeFlush))
        };
        let pending: Vec<usize> = self
            .plains
            .iter()
            .copied()
            .filter(|&i| match self.roles.get(i) {
                Some(&Role::Plain {
                    known_at,
                    durable_at,
                }) => known_at <= p.entry && !durable(durable_at),
                _ => false,
            })
            .collect();
        let floor = pending.first().map_or(limit, |&i| i.min(limit));
        let base = (floor..limit)
            .filter(|&i| match self.roles.get(i) {
                None | Some(Role::NoData) => false,
                Some(Role::Ordered) => true,
                Some(&Role::Plain { durable_at, .. }) => durable(durable_at),
            })
            .collect();
        Candidates {
            floor,
            base,
            pending,
        }
    }

    /// Every subset state of the log, each once, in the order of their
    /// floors. States with the same images are judged once, at the latest
    /// of their points: the oracle only grows stricter as acknowledgements
    /// come (a write acknowledged is demanded, no longer merely allowed),
    /// so a state good at its latest point is good at the earlier ones.
    /// `seed` draws the random subsets.
    pub fn states(&self, seed: u64) -> Vec<SubsetState> {
        let mut index: HashMap<(usize, Vec<usize>), usize> = HashMap::new();
        let mut out: Vec<SubsetState> = Vec::new();
        for &p in &self.points {
            let c = self.candidates(p);
            let mut rng = Rng::new(point_seed(seed, p));
            for keep in subsets(c.pending.len(), &mut rng) {
                let st = state(p, &c, &keep);
                match index.entry(self.key(&st)) {
                    Entry::Vacant(slot) => {
                        slot.insert(out.len());
                        out.push(st);
                    }
                    Entry::Occupied(slot) => {
                        let old = &mut out[*slot.get()];
                        if self.acks_at(st.point) > self.acks_at(old.point) {
                            *old = st;
                        }
                    }
                }
            }
        }
        out.sort_by_key(|st| st.floor);
        out
    }

    /// Acknowledgement marks at or before a point.
    fn acks_at(&self, p: SubsetPoint) -> u32 {
        self.acks_upto.get(p.entry).copied().unwrap_or(0)
    }

    /// What identifies a state's images: the first data entry it does not
    /// hold, and the data entries after that one it holds.
    fn key(&self, st: &SubsetState) -> (usize, Vec<usize>) {
        let mut first_missing = st.floor;
        let mut rest = st.applied.iter().copied().peekable();
        while first_missing < self.roles.len() {
            if rest.peek() == Some(&first_missing) {
                rest.next();
            } else if self.has_data(first_missing) {
                break;
            }
            first_missing += 1;
        }
        (first_missing, rest.collect())
    }
}

/// The entries known to have completed by an acknowledgement mark: for
/// each workload write with a mark, the first entry that carries it (an
/// origin write on the origin at its own offset, a snapshot write on the
/// COW device), mapped to the index of the mark. Later copies of the same
/// data (a merge, a new snapshot's copy of an origin write) are not the
/// write.
fn acknowledged_entries(log: &Log, geo: &Geometry) -> HashMap<usize, usize> {
    let acks = crate::replay::ack_marks(log);
    let mut seen = HashSet::new();
    let mut known: HashMap<usize, usize> = HashMap::new();
    let blocks = tagged_blocks(log, geo, Slice::Origin)
        .into_iter()
        .filter(|b| b.tag.kind == Kind::Origin && b.at == b.tag.offset)
        .chain(
            tagged_blocks(log, geo, Slice::Cow)
                .into_iter()
                .filter(|b| b.tag.kind == Kind::Snapshot),
        );
    for b in blocks {
        if !b.intact || !seen.insert((b.tag.kind, b.tag.id)) {
            continue;
        }
        if let Some(&ack) = acks.get(&b.tag.id) {
            let k = known.entry(b.entry).or_insert(ack);
            *k = (*k).min(ack);
        }
    }
    known
}

/// The seed of a point's random subsets.
fn point_seed(seed: u64, p: SubsetPoint) -> u64 {
    let moment = match p.moment {
        Moment::BeforeFlush => 0,
        Moment::AfterFlush => 1,
        Moment::Fua => 2,
        Moment::Ack => 3,
    };
    seed ^ ((p.entry as u64) << 2 | moment).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The subsets of `k` pending writes to try, as "keep" flags: all of them
/// up to [`EXHAUSTIVE_MAX`]; beyond, none, all, all but one (each), one
/// alone (each) and [`RANDOM_SUBSETS`] drawn from `rng`.
pub fn subsets(k: usize, rng: &mut Rng) -> Vec<Vec<bool>> {
    if k <= EXHAUSTIVE_MAX {
        return (0..1u32 << k)
            .map(|m| (0..k).map(|b| m >> b & 1 == 1).collect())
            .collect();
    }
    let mut out = vec![vec![false; k], vec![true; k]];
    for i in 0..k {
        let mut all_but = vec![true; k];
        all_but[i] = false;
        out.push(all_but);
        let mut alone = vec![false; k];
        alone[i] = true;
        out.push(alone);
    }
    for _ in 0..RANDOM_SUBSETS {
        let mut keep = Vec::with_capacity(k);
        while keep.len() < k {
            let bits = rng.next_u64();
            let n = (k - keep.len()).min(64);
            keep.extend((0..n).map(|b| bits >> b & 1 == 1));
        }
        out.push(keep);
    }
    out
}

/// The state of point `p` that keeps the pending writes flagged in `keep`.
fn state(p: SubsetPoint, c: &Candidates, keep: &[bool]) -> SubsetState {
    let mut applied = c.base.clone();
    let mut left_out = Vec::new();
    for (&i, &k) in c.pending.iter().zip(keep) {
        if k {
            applied.push(i);
        } else {
            left_out.push(i);
        }
    }
    applied.sort_unstable();
    SubsetState {
        point: p,
        floor: c.floor,
        applied,
        pending: c.pending.len(),
        left_out,
    }
}

/// Builds the images of subset states: a floor (every data entry before
/// an index applied) advanced as the states go, and on top of it each
/// state's own entries, taken back once the state was looked at.
pub struct Materializer<'m, 'l> {
    model: &'m Model<'l>,
    images: Images,
    /// Entries below this index are in the floor.
    applied: usize,
    /// What the state's entries changed, in the order they were applied.
    written: Vec<Written>,
    /// The bytes they replaced, one after the other.
    saved: Vec<u8>,
}

impl<'m, 'l> Materializer<'m, 'l> {
    /// A materializer starting from zeroed slices.
    pub fn new(model: &'m Model<'l>) -> Self {
        Self {
            model,
            images: Images::zeroed(&model.geo),
            applied: 0,
            written: Vec::new(),
            saved: Vec::new(),
        }
    }

    /// The origin and COW images with every data entry before `floor`.
    pub fn floor_images(&mut self, floor: usize) -> (&[u8], &[u8]) {
        self.advance(floor);
        (&self.images.origin, &self.images.cow)
    }

    /// Calls `f` with the origin and COW images of `st`, and what its
    /// entries changed on top of its floor.
    pub fn with_state<R>(
        &mut self,
        st: &SubsetState,
        f: impl FnOnce(&[u8], &[u8], &[Written]) -> R,
    ) -> R {
        self.advance(st.floor);
        for &i in &st.applied {
            self.apply_saving(i);
        }
        let r = f(&self.images.origin, &self.images.cow, &self.written);
        self.take_back();
        r
    }

    /// Moves the floor to `floor`, from scratch if it was beyond.
    fn advance(&mut self, floor: usize) {
        if floor < self.applied {
            self.images = Images::zeroed(&self.model.geo);
            self.applied = 0;
        }
        let entries = &self.model.log.entries;
        while self.applied < floor.min(entries.len()) {
            if self.model.has_data(self.applied) {
                self.images
                    .apply(&self.model.geo, &entries[self.applied], None);
            }
            self.applied += 1;
        }
    }

    /// Applies entry `i`, saving the bytes it covers first.
    fn apply_saving(&mut self, i: usize) {
        let Some(e) = self.model.log.entries.get(i) else {
            return;
        };
        for (slice, at, _, len) in self.model.geo.split(e.offset, e.len) {
            let (Ok(at), Ok(len)) = (usize::try_from(at), usize::try_from(len)) else {
                continue;
            };
            let img = match slice {
                Slice::Origin => &self.images.origin,
                Slice::Cow => &self.images.cow,
            };
            let Some(old) = at.checked_add(len).and_then(|end| img.get(at..end)) else {
                continue;
            };
            self.written.push(Written { slice, at, len });
            self.saved.extend_from_slice(old);
        }
        self.images.apply(&self.model.geo, e, None);
    }

    /// Restores the bytes saved since the floor, newest first.
    fn take_back(&mut self) {
        let mut end = self.saved.len();
        while let Some(w) = self.written.pop() {
            let start = end - w.len;
            let img = match w.slice {
                Slice::Origin => &mut self.images.origin,
                Slice::Cow => &mut self.images.cow,
            };
            if let (Some(dst), Some(src)) =
                (img.get_mut(w.at..w.at + w.len), self.saved.get(start..end))
            {
                dst.copy_from_slice(src);
            }
            end = start;
        }
        self.saved.clear();
    }
}

/// Judges subset states at the format level ([`Judge`]), one after the
/// other, in the order [`Model::states`] gives: each state's images are
/// built over its floor, whose view is checked once in full; of each
/// state, only the blocks of the view its own writes (or a change of its
/// exceptions) can change are checked again, with those written through
/// the snapshot, whose verdict depends on the state.
pub struct SubsetJudge<'m, 'l> {
    images: Materializer<'m, 'l>,
    judge: Judge,
}

impl<'m, 'l> SubsetJudge<'m, 'l> {
    /// A judge of the states of `model`, whose COW device has these
    /// logical block sizes.
    pub fn new(model: &'m Model<'l>, blocks: BlockSizes) -> Self {
        Self {
            images: Materializer::new(model),
            judge: Judge::new(blocks),
        }
    }

    /// Judges `st` against `oracle` (the same one at every call), then
    /// hands the judgement and the state's origin and COW images to
    /// `then`.
    pub fn judge<R>(
        &mut self,
        oracle: &Oracle,
        st: &SubsetState,
        then: impl FnOnce(&Judgement, &[u8], &[u8]) -> R,
    ) -> (Judgement, R) {
        if !self.judge.has_reference(st.floor) {
            let (origin, cow) = self.images.floor_images(st.floor);
            self.judge.set_reference(st.floor, oracle, origin, cow);
        }
        let judge = &mut self.judge;
        self.images.with_state(st, |origin, cow, written| {
            let holds = |e: usize| st.holds(e);
            let cut = Cut {
                acked_by: st.point.entry,
                holds: &holds,
            };
            let j = judge.judge_over(st.floor, oracle, &cut, origin, cow, written);
            let r = then(&j, origin, cow);
            (j, r)
        })
    }
}

/// Picks up to `n` of the states, seeded, for the kernel: only states that
/// keep some pending write (a state without any is mostly a prefix the
/// other points load already). The flags are indexed like `states`.
pub fn kernel_sample(states: &[SubsetState], n: usize, seed: u64) -> Vec<bool> {
    let mut pool: Vec<usize> = (0..states.len())
        .filter(|&i| states[i].keeps_any())
        .collect();
    let mut rng = Rng::new(seed ^ 0x6b65_726e_656c);
    let take = n.min(pool.len());
    for i in 0..take {
        let j = i + rng.below((pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    let mut picked = vec![false; states.len()];
    for &i in &pool[..take] {
        picked[i] = true;
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogBuilder;
    use crate::test_util::otag;
    use crate::test_util::GEO;

    fn parse(b: &LogBuilder) -> Log {
        Log::parse(&b.build()[..]).unwrap()
    }

    fn points(m: &Model<'_>) -> Vec<(usize, Moment)> {
        m.points().iter().map(|p| (p.entry, p.moment)).collect()
    }

    #[test]
    fn points_are_flushes_both_sides_fua_writes_and_acks() {
        let mut b = LogBuilder::new(512);
        b.mark("setup-done") // 0
            .write(0, 0, &[1; 4096]) // 1
            .flush() // 2
            .write(GEO.cow_start, FUA, &[2; 512]) // 3
            .mark("ack-1") // 4
            .mark("other") // 5
            .write(GEO.cow_start, FLUSH | FUA, &[3; 512]); // 6
        let log = parse(&b);
        let m = Model::new(&log, GEO, &ModelOptions::default());
        assert_eq!(
            points(&m),
            vec![
                (2, Moment::BeforeFlush),
                (2, Moment::AfterFlush),
                (3, Moment::Fua),
                (4, Moment::Ack),
                (6, Moment::BeforeFlush),
                (6, Moment::AfterFlush),
            ]
        );
        let from = ModelOptions {
            from: 4,
            ..ModelOptions::default()
        };
        assert_eq!(Model::new(&log, GEO, &from).points().len(), 3);
    }

    #[test]
    fn a_flush_batch_is_pending_before_and_durable_after() {
        let mut b = LogBuilder::new(512);
        b.write(GEO.cow_start, FUA, &[9; 512]) // 0
            .write(0, 0, &[1; 4096]) // 1
            .write(4096, 0, &[2; 4096]) // 2
            .write(GEO.cow_start + 512, FLUSH | FUA, &[3; 512]); // 3
        let log = parse(&b);
        let m = Model::new(&log, GEO, &ModelOptions::default());
        let before = m.candidates(SubsetPoint {
            entry: 3,
            moment: Moment::BeforeFlush,
        });
        assert_eq!(
            before,
            Candidates {
                floor: 1,
                base: vec![],
                pending: vec![1, 2]
            }
        );
        let after = m.candidates(SubsetPoint {
            entry: 3,
            moment: Moment::AfterFlush,
        });
        assert_eq!(
            after,
            Candidates {
                floor: 4,
                base: vec![],
                pending: vec![]
            }
        );
    }

    #[test]
    fn acknowledged_writes_logged_later_are_pending_at_their_mark_and_after() {
        let mut b = LogBuilder::new(512);
        b.mark("ack-1") // 0: write 1 completed
            .write(GEO.cow_start, FUA, &[5; 512]) // 1
            .mark("ack-2") // 2
            .write(0, 0, &otag(1, 0)) // 3
            .write(4096, 0, &otag(2, 4096)) // 4
            .write(8192, 0, &otag(3, 8192)) // 5: never acknowledged
            .flush(); // 6
        let log = parse(&b);
        let m = Model::new(&log, GEO, &ModelOptions::default());
        let at = |entry, moment| m.candidates(SubsetPoint { entry, moment });
        assert_eq!(at(0, Moment::Ack).pending, vec![3]);
        let fua = at(1, Moment::Fua);
        assert_eq!(
            (fua.floor, fua.base.clone(), fua.pending),
            (2, vec![], vec![3])
        );
        assert_eq!(at(2, Moment::Ack).pending, vec![3, 4]);
        assert_eq!(at(6, Moment::BeforeFlush).pending, vec![3, 4, 5]);
        assert_eq!(at(6, Moment::AfterFlush).pending, vec![]);
    }

    #[test]
    fn copies_of_acknowledged_data_are_not_the_write() {
        let mut b = LogBuilder::new(512);
        b.mark("ack-1") // 0
            .write(GEO.cow_start + 4096, 0, &otag(1, 0)) // 1: a copy to the COW
            .write(0, 0, &otag(1, 0)) // 2: the write itself
            .flush(); // 3
        let log = parse(&b);
        let m = Model::new(&log, GEO, &ModelOptions::default());
        let ack = m.candidates(SubsetPoint {
            entry: 0,
            moment: Moment::Ack,
        });
        assert_eq!(ack.pending, vec![2]);
    }

    #[test]
    fn a_commit_treated_as_plain_stays_pending_until_the_next_flush() {
        let mut b = LogBuilder::new(512);
        b.write(0, 0, &[1; 4096]) // 0
            .write(GEO.cow_start, FLUSH | FUA, &[2; 512]) // 1: the commit
            .mark("ack-1") // 2
            .write(4096, 0, &otag(1, 4096)) // 3
            .flush(); // 4
        let log = parse(&b);
        let opts = ModelOptions {
            plain: Some(1),
            ..ModelOptions::default()
        };
        let m = Model::new(&log, GEO, &opts);
        assert_eq!(
            points(&m),
            vec![
                (2, Moment::Ack),
                (4, Moment::BeforeFlush),
                (4, Moment::AfterFlush)
            ]
        );
        let ack = m.candidates(SubsetPoint {
            entry: 2,
            moment: Moment::Ack,
        });
        assert_eq!((ack.floor, ack.pending), (0, vec![0, 1, 3]));
        let before = m.candidates(SubsetPoint {
            entry: 4,
            moment: Moment::BeforeFlush,
        });
        assert_eq!(before.pending, vec![0, 1, 3]);
    }

    #[test]
    fn every_subset_up_to_ten_then_a_bounded_seeded_sample() {
        let mut rng = Rng::new(1);
        assert_eq!(subsets(0, &mut rng), vec![Vec::<bool>::new()]);
        assert_eq!(subsets(10, &mut rng).len(), 1024);
        let big = subsets(70, &mut Rng::new(7));
        assert_eq!(big.len(), 2 + 2 * 70 + RANDOM_SUBSETS);
        assert!(big.iter().all(|s| s.len() == 70));
        assert!(big[0].iter().all(|&k| !k) && big[1].iter().all(|&k| k));
        assert_eq!(big[2].iter().filter(|&&k| !k).count(), 1);
        assert_eq!(big[3].iter().filter(|&&k| k).count(), 1);
        assert_eq!(big, subsets(70, &mut Rng::new(7)));
        assert_ne!(big, subsets(70, &mut Rng::new(8)));
    }

    #[test]
    fn states_are_listed_once_and_rebuilt_exactly() {
        let mut b = LogBuilder::new(512);
        b.mark("setup-done") // 0
            .write(0, 0, &[1; 4096]) // 1
            .write(0, 0, &[2; 4096]) // 2: same block, later
            .write(GEO.cow_start, 0, &[3; 512]) // 3
            .flush() // 4
            .flush(); // 5: adds nothing
        let log = parse(&b);
        let m = Model::new(&log, GEO, &ModelOptions::default());
        let states = m.states(DEFAULT_SEED);
        // Before 4: 8 subsets; after 4 = before 5 = after 5: the full set.
        assert_eq!(states.len(), 8);
        let mut mat = Materializer::new(&m);
        let mut seen = Vec::new();
        for st in &states {
            let (o, c) = mat.with_state(st, |o, c, _| (o[0], c[0]));
            seen.push((st.applied.clone(), o, c));
        }
        let expect = |applied: &[usize], o, c| (applied.to_vec(), o, c);
        assert!(seen.contains(&expect(&[], 0, 0)));
        assert!(seen.contains(&expect(&[1], 1, 0)));
        // The later write of the block kept, the earlier one left out.
        assert!(seen.contains(&expect(&[2], 2, 0)));
        assert!(seen.contains(&expect(&[1, 2, 3], 2, 3)));
        // The floor is back where it was after each state.
        let after = states.last().unwrap();
        let again = mat.with_state(after, |o, c, _| (o[0], c[0]));
        assert_eq!(again, (seen.last().unwrap().1, seen.last().unwrap().2));
    }

    #[test]
    fn the_floor_rewinds_if_a_state_needs_an_earlier_one() {
        let mut b = LogBuilder::new(512);
        b.write(0, 0, &[1; 4096])
            .flush()
            .write(0, 0, &[2; 4096])
            .flush();
        let log = parse(&b);
        let m = Model::new(&log, GEO, &ModelOptions::default());
        let states = m.states(DEFAULT_SEED);
        let mut mat = Materializer::new(&m);
        let last = states.last().unwrap();
        assert_eq!(mat.with_state(last, |o, _, _| o[0]), 2);
        assert_eq!(mat.with_state(&states[0], |o, _, _| o[0]), 0);
    }

    #[test]
    fn the_kernel_sample_is_seeded_bounded_and_skips_empty_subsets() {
        let mut b = LogBuilder::new(512);
        for i in 0..6u64 {
            b.write(i * 512, 0, &[1; 512]);
        }
        b.flush();
        let log = parse(&b);
        let m = Model::new(&log, GEO, &ModelOptions::default());
        let states = m.states(DEFAULT_SEED);
        assert_eq!(states.len(), 64);
        let pick = kernel_sample(&states, 10, 3);
        assert_eq!(pick.iter().filter(|&&p| p).count(), 10);
        assert_eq!(pick, kernel_sample(&states, 10, 3));
        let all = kernel_sample(&states, 100, 3);
        assert_eq!(all.iter().filter(|&&p| p).count(), 63);
        assert!(states.iter().zip(&all).all(|(s, &p)| p == s.keeps_any()));
    }
}
