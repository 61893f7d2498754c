// SPDX-License-Identifier: GPL-2.0-only

//! Crash points, and the images of the origin and the COW device at each.
//!
//! The logged device holds the origin and the COW device as two slices
//! ([`Geometry`]). A crash point names a log entry and a [`Variant`]:
//!
//! - [`Variant::Durable`]: the log up to and including a flush or FUA entry.
//! - [`Variant::MarkPlus`]: the log up to an acknowledgement mark, plus the
//!   origin writes logged after it whose acknowledgement mark came before it
//!   (dm-log-writes logs a plain write only when the next flush completes,
//!   so a write that was acknowledged can sit after its mark in the log;
//!   at a crash it may well have reached the disk).
//! - [`Variant::TornFirst`], [`Variant::TornAllButLast`]: the log before a
//!   multi-block flush or FUA write, plus its first block only, or all of it
//!   but its last block.
//! - [`Variant::Every`]: the log up to and including any entry.
//!
//! [`Replayer`] keeps the images in memory and applies the log forward, so
//! points must be visited in the order [`crash_points`] gives.
//!
//! [`kernel`] loads each point in the kernel (`crash_replay`).

#![forbid(unsafe_code)]

pub mod kernel;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use crate::log::Entry;
use crate::log::Log;
use crate::log::DISCARD;
use crate::log::FUA;
use crate::log::MARK;
use crate::tag::Kind;
use crate::tag::Tag;
use crate::tag::BLOCK;

/// Where the origin and the COW device lie on the logged device (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Start of the origin slice.
    pub origin_start: u64,
    /// Length of the origin slice.
    pub origin_len: u64,
    /// Start of the COW slice.
    pub cow_start: u64,
    /// Length of the COW slice.
    pub cow_len: u64,
}

/// Which of the two slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slice {
    /// The origin.
    Origin,
    /// The COW device.
    Cow,
}

impl Geometry {
    /// The parts of the byte range `offset..offset+len` of the logged
    /// device that fall in a slice: (slice, offset in the slice, offset in
    /// the range, length).
    pub fn split(&self, offset: u64, len: u64) -> Vec<(Slice, u64, u64, u64)> {
        let mut out = Vec::new();
        for (s, start, slen) in [
            (Slice::Origin, self.origin_start, self.origin_len),
            (Slice::Cow, self.cow_start, self.cow_len),
        ] {
            let lo = offset.max(start);
            let hi = (offset + len).min(start + slen);
            if lo < hi {
                out.push((s, lo - start, lo - offset, hi - lo));
            }
        }
        out
    }
}

/// A 4 KiB block of a logged write that carries a workload tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedBlock {
    /// Index of the log entry.
    pub entry: usize,
    /// Byte offset in the slice.
    pub at: u64,
    /// Byte offset in the entry's data.
    pub from: u64,
    /// The tag.
    pub tag: Tag,
    /// Whether the whole block is what the tag says (not torn or mixed).
    pub intact: bool,
}

/// Every tagged 4 KiB block the log's writes put on `slice`, in log order.
pub fn tagged_blocks(log: &Log, geo: &Geometry, slice: Slice) -> Vec<TaggedBlock> {
    let mut out = Vec::new();
    for (i, e) in log.entries.iter().enumerate() {
        if !e.is_write() {
            continue;
        }
        for (s, at, from, n) in geo.split(e.offset, e.len) {
            if s != slice {
                continue;
            }
            let mut k = 0;
            while k + BLOCK as u64 <= n {
                let src = &e.data[(from + k) as usize..(from + k) as usize + BLOCK];
                if let Some(tag) = Tag::parse(src) {
                    out.push(TaggedBlock {
                        entry: i,
                        at: at + k,
                        from: from + k,
                        intact: tag.matches(src),
                        tag,
                    });
                }
                k += BLOCK as u64;
            }
        }
    }
    out
}

/// The contents of the two slices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// The origin.
    pub origin: Vec<u8>,
    /// The COW device.
    pub cow: Vec<u8>,
}

impl Images {
    /// Both slices zeroed (a fresh ram disk).
    pub fn zeroed(geo: &Geometry) -> Self {
        Self {
            origin: vec![0; geo.origin_len as usize],
            cow: vec![0; geo.cow_len as usize],
        }
    }

    fn slice_mut(&mut self, s: Slice) -> &mut Vec<u8> {
        match s {
            Slice::Origin => &mut self.origin,
            Slice::Cow => &mut self.cow,
        }
    }

    /// Applies the first `limit` bytes (all if `None`) of a log entry.
    pub fn apply(&mut self, geo: &Geometry, e: &Entry, limit: Option<u64>) {
        if e.flags & MARK != 0 {
            return;
        }
        let len = limit.map_or(e.len, |l| l.min(e.len));
        for (s, at, from, n) in geo.split(e.offset, len) {
            let img = self.slice_mut(s);
            let dst = &mut img[at as usize..(at + n) as usize];
            if e.flags & DISCARD != 0 {
                dst.fill(0);
            } else if let Some(src) = e.data.get(from as usize..(from + n) as usize) {
                dst.copy_from_slice(src);
            }
        }
    }
}

/// How a crash point is built from the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variant {
    /// Up to and including a flush or FUA entry.
    Durable,
    /// Up to and including an acknowledgement mark, plus the origin writes
    /// logged later that were acknowledged before it.
    MarkPlus,
    /// Before a multi-block flush/FUA write, plus its first block.
    TornFirst,
    /// Before a multi-block flush/FUA write, plus all but its last block.
    TornAllButLast,
    /// Up to and including any entry.
    Every,
}

impl Variant {
    /// Name used in messages and options.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::MarkPlus => "mark-plus",
            Self::TornFirst => "torn-first",
            Self::TornAllButLast => "torn-all-but-last",
            Self::Every => "every",
        }
    }

    /// Whether the point's entry is only partly applied.
    pub const fn is_torn(self) -> bool {
        matches!(self, Self::TornFirst | Self::TornAllButLast)
    }

    const fn order(self) -> u8 {
        // Torn points come before the full entry is applied.
        match self {
            Self::TornFirst => 0,
            Self::TornAllButLast => 1,
            Self::Durable => 2,
            Self::Every => 3,
            Self::MarkPlus => 4,
        }
    }
}

/// A crash point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Point {
    /// Index of the log entry.
    pub entry: usize,
    /// How the point is built.
    pub variant: Variant,
}

impl Point {
    /// Whether the point's state holds the data of log entry `entry`: the
    /// entries before it, and its own unless it is torn.
    pub fn holds(&self, entry: usize) -> bool {
        entry < self.entry || (entry == self.entry && !self.variant.is_torn())
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {} ({})", self.entry, self.variant.name())
    }
}

/// Which crash points to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointOptions {
    /// No points before this entry index.
    pub from: usize,
    /// [`Variant::Durable`] points.
    pub durable: bool,
    /// [`Variant::MarkPlus`] points.
    pub mark_plus: bool,
    /// Torn points.
    pub torn: bool,
    /// [`Variant::Every`] points.
    pub every: bool,
}

/// Prefix of the acknowledgement marks the workload writes.
pub const ACK_PREFIX: &str = "ack-";

/// The acknowledgement marks: write id to entry index.
pub fn ack_marks(log: &Log) -> HashMap<u64, usize> {
    let mut acks = HashMap::new();
    for (i, e) in log.entries.iter().enumerate() {
        if let Some(id) = e
            .mark
            .as_deref()
            .and_then(|m| m.strip_prefix(ACK_PREFIX))
            .and_then(|s| s.parse().ok())
        {
            acks.entry(id).or_insert(i);
        }
    }
    acks
}

/// The crash points of a log, in the order a [`Replayer`] visits them.
pub fn crash_points(log: &Log, opts: &PointOptions) -> Vec<Point> {
    let ss = u64::from(log.sectorsize);
    let mut pts = Vec::new();
    for (i, e) in log.entries.iter().enumerate().skip(opts.from) {
        if opts.every {
            pts.push(Point {
                entry: i,
                variant: Variant::Every,
            });
        }
        if opts.durable && e.is_durability_point() {
            pts.push(Point {
                entry: i,
                variant: Variant::Durable,
            });
        }
        if opts.torn && e.is_durability_point() && e.is_write() && e.len >= 2 * ss {
            pts.push(Point {
                entry: i,
                variant: Variant::TornFirst,
            });
            if e.len > 2 * ss {
                pts.push(Point {
                    entry: i,
                    variant: Variant::TornAllButLast,
                });
            }
        }
        if opts.mark_plus && e.mark.as_deref().is_some_and(|m| m.starts_with(ACK_PREFIX)) {
            pts.push(Point {
                entry: i,
                variant: Variant::MarkPlus,
            });
        }
    }
    pts.sort_by_key(|p| (p.entry, p.variant.order()));
    pts
}

/// The FUA writes to the COW device from entry `from` on, but for those
/// that start at its header: the store's commits, which the self-tests of
/// the oracle leave out (`--drop-commit`) or treat as plain writes
/// (`--plain-commit`).
pub fn commit_writes(log: &Log, geo: &Geometry, from: usize) -> Vec<usize> {
    log.entries
        .iter()
        .enumerate()
        .skip(from)
        .filter(|(_, e)| e.is_write() && e.flags & FUA != 0)
        .filter(|(_, e)| {
            geo.split(e.offset, e.len)
                .iter()
                .any(|&(s, at, _, _)| s == Slice::Cow && at > 0)
        })
        .map(|(i, _)| i)
        .collect()
}

/// An origin block written by the workload, as found in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OriginBlock {
    entry: usize,
    /// Offset in the entry's data.
    from: u64,
    /// Offset on the origin.
    at: u64,
    id: u64,
}

/// The images at a crash point.
pub struct State<'a> {
    /// The origin.
    pub origin: Cow<'a, [u8]>,
    /// The COW device.
    pub cow: Cow<'a, [u8]>,
}

/// Rebuilds the images at crash points, applying the log forward.
pub struct Replayer<'l> {
    log: &'l Log,
    geo: Geometry,
    images: Images,
    /// Entries applied so far.
    applied: usize,
    acks: HashMap<u64, usize>,
    origin_blocks: Vec<OriginBlock>,
    dropped: Vec<usize>,
}

impl<'l> Replayer<'l> {
    /// A replayer starting from zeroed slices.
    pub fn new(log: &'l Log, geo: Geometry) -> Self {
        let origin_blocks = tagged_blocks(log, &geo, Slice::Origin)
            .into_iter()
            .filter(|b| b.tag.kind == Kind::Origin && b.at % BLOCK as u64 == 0)
            .map(|b| OriginBlock {
                entry: b.entry,
                from: b.from,
                at: b.at,
                id: b.tag.id,
            })
            .collect();
        Self {
            log,
            geo,
            images: Images::zeroed(&geo),
            applied: 0,
            acks: ack_marks(log),
            origin_blocks,
            dropped: Vec::new(),
        }
    }

    /// Leaves these entries out of every replay (the self-test).
    pub fn drop_entries(&mut self, entries: Vec<usize>) {
        self.dropped = entries;
    }

    /// The images after the first `n` entries (`n` not below what was
    /// applied already).
    pub fn advance(&mut self, n: usize) -> &Images {
        while self.applied < n.min(self.log.entries.len()) {
            if !self.dropped.contains(&self.applied) {
                self.images
                    .apply(&self.geo, &self.log.entries[self.applied], None);
            }
            self.applied += 1;
        }
        &self.images
    }

    /// The images at a crash point.
    pub fn state(&mut self, p: Point) -> State<'_> {
        let ss = u64::from(self.log.sectorsize);
        let e = &self.log.entries[p.entry];
        if p.variant.is_torn() {
            self.advance(p.entry);
            let limit = match p.variant {
                Variant::TornFirst => ss,
                _ => e.len - ss,
            };
            let mut partial = self.images.clone();
            if !self.dropped.contains(&p.entry) {
                partial.apply(&self.geo, e, Some(limit));
            }
            let (o, c) = (partial.origin, partial.cow);
            let origin = if o == self.images.origin {
                Cow::Borrowed(&self.images.origin[..])
            } else {
                Cow::Owned(o)
            };
            let cow = if c == self.images.cow {
                Cow::Borrowed(&self.images.cow[..])
            } else {
                Cow::Owned(c)
            };
            return State { origin, cow };
        }
        self.advance(p.entry + 1);
        if p.variant == Variant::MarkPlus {
            let mut origin: Option<Vec<u8>> = None;
            for b in &self.origin_blocks {
                if b.entry <= p.entry || self.dropped.contains(&b.entry) {
                    continue;
                }
                if self.acks.get(&b.id).is_some_and(|&a| a < p.entry + 1) {
                    let img = origin.get_or_insert_with(|| self.images.origin.clone());
                    let src =
                        &self.log.entries[b.entry].data[b.from as usize..b.from as usize + BLOCK];
                    img[b.at as usize..b.at as usize + BLOCK].copy_from_slice(src);
                }
            }
            if let Some(o) = origin {
                return State {
                    origin: Cow::Owned(o),
                    cow: Cow::Borrowed(&self.images.cow[..]),
                };
            }
        }
        State {
            origin: Cow::Borrowed(&self.images.origin[..]),
            cow: Cow::Borrowed(&self.images.cow[..]),
        }
    }

    /// The acknowledgement marks.
    pub fn acks(&self) -> &HashMap<u64, usize> {
        &self.acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogBuilder;
    use crate::log::FLUSH;
    use crate::test_util::otag;
    use crate::test_util::GEO;

    #[test]
    fn split_cuts_a_range_at_the_slice_boundary() {
        assert_eq!(
            GEO.split(3 * 4096, 2 * 4096),
            vec![
                (Slice::Origin, 3 * 4096, 0, 4096),
                (Slice::Cow, 0, 4096, 4096)
            ]
        );
        assert_eq!(GEO.split(9 * 4096, 4096), vec![]);
    }

    #[test]
    fn points_are_flushes_fuas_acks_and_torn_multi_block_writes() {
        let mut b = LogBuilder::new(512);
        b.write(0, 0, &[1; 4096]) // 0
            .mark("setup-done") // 1
            .flush() // 2
            .write(GEO.cow_start, FUA, &[2; 4096]) // 3: 8 blocks
            .mark("ack-1") // 4
            .write(GEO.cow_start, FUA, &[3; 1024]) // 5: 2 blocks
            .mark("other"); // 6
        let log = Log::parse(&b.build()[..]).unwrap();
        let opts = PointOptions {
            from: 1,
            durable: true,
            mark_plus: true,
            torn: true,
            every: false,
        };
        let pts: Vec<(usize, Variant)> = crash_points(&log, &opts)
            .iter()
            .map(|p| (p.entry, p.variant))
            .collect();
        assert_eq!(
            pts,
            vec![
                (2, Variant::Durable),
                (3, Variant::TornFirst),
                (3, Variant::TornAllButLast),
                (3, Variant::Durable),
                (4, Variant::MarkPlus),
                (5, Variant::TornFirst),
                (5, Variant::Durable),
            ]
        );
        let every = PointOptions {
            from: 5,
            durable: false,
            mark_plus: false,
            torn: false,
            every: true,
        };
        assert_eq!(crash_points(&log, &every).len(), 2);
    }

    #[test]
    fn replay_applies_prefixes_torn_writes_and_discards() {
        let mut b = LogBuilder::new(512);
        b.write(0, 0, &[1; 8192])
            .flush()
            .write(GEO.cow_start + 512, FLUSH | FUA, &[2; 1536])
            .discard(0, 4096)
            .flush();
        let log = Log::parse(&b.build()[..]).unwrap();
        let mut r = Replayer::new(&log, GEO);
        let s = r.state(Point {
            entry: 1,
            variant: Variant::Durable,
        });
        assert_eq!(s.origin[..8192], [1; 8192]);
        assert!(s.cow.iter().all(|&x| x == 0));
        let s = r.state(Point {
            entry: 2,
            variant: Variant::TornFirst,
        });
        assert_eq!(s.cow[512..1024], [2; 512]);
        assert_eq!(s.cow[1024..1536], [0; 512]);
        let s = r.state(Point {
            entry: 2,
            variant: Variant::TornAllButLast,
        });
        assert_eq!(s.cow[512..1536], [2; 1024]);
        assert_eq!(s.cow[1536..2048], [0; 512]);
        let s = r.state(Point {
            entry: 4,
            variant: Variant::Durable,
        });
        assert_eq!(s.cow[512..2048], [2; 1536]);
        assert_eq!(s.origin[..4096], [0; 4096]);
        assert_eq!(s.origin[4096..8192], [1; 4096]);
    }

    #[test]
    fn mark_plus_adds_later_origin_writes_acknowledged_before_the_mark() {
        let mut b = LogBuilder::new(512);
        b.mark("setup-done") // 0
            .mark("ack-1") // 1: write 1 acknowledged, logged later
            .mark("ack-2") // 2
            .write(0, 0, &otag(1, 0)) // 3
            .write(4096, 0, &otag(2, 4096)) // 4
            .write(8192, 0, &otag(3, 8192)) // 5: never acknowledged
            .write(GEO.cow_start, 0, &otag(1, 0)) // 6: a COW write is never added
            .flush(); // 7
        let log = Log::parse(&b.build()[..]).unwrap();
        let mut r = Replayer::new(&log, GEO);
        let s = r.state(Point {
            entry: 1,
            variant: Variant::MarkPlus,
        });
        assert!(s.origin[..4096] == otag(1, 0)[..]);
        assert!(s.origin[4096..8192].iter().all(|&x| x == 0));
        let s = r.state(Point {
            entry: 2,
            variant: Variant::MarkPlus,
        });
        assert!(s.origin[4096..8192] == otag(2, 4096)[..]);
        assert!(s.origin[8192..12288].iter().all(|&x| x == 0));
        assert!(s.cow.iter().all(|&x| x == 0));
        // The plain prefix does not have them.
        let s = r.state(Point {
            entry: 2,
            variant: Variant::Durable,
        });
        assert!(s.origin.iter().all(|&x| x == 0));
    }

    #[test]
    fn commits_are_fua_writes_to_the_cow_device_past_its_header() {
        let mut b = LogBuilder::new(512);
        b.write(GEO.cow_start, FLUSH | FUA, &[1; 512]) // 0: the header
            .write(GEO.cow_start + 4096, FUA, &[2; 512]) // 1
            .write(GEO.cow_start + 4096, 0, &[3; 512]) // 2: plain
            .write(0, FUA, &[4; 512]) // 3: the origin
            .write(GEO.cow_start + 4096, FLUSH | FUA, &[5; 512]); // 4
        let log = Log::parse(&b.build()[..]).unwrap();
        assert_eq!(commit_writes(&log, &GEO, 0), vec![1, 4]);
        assert_eq!(commit_writes(&log, &GEO, 2), vec![4]);
    }

    #[test]
    fn dropped_entries_are_left_out() {
        let mut b = LogBuilder::new(512);
        b.write(GEO.cow_start, FUA, &[5; 512]).flush();
        let log = Log::parse(&b.build()[..]).unwrap();
        let mut r = Replayer::new(&log, GEO);
        r.drop_entries(vec![0]);
        let s = r.state(Point {
            entry: 1,
            variant: Variant::Durable,
        });
        assert!(s.cow.iter().all(|&x| x == 0));
    }
}
