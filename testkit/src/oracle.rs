// SPDX-License-Identifier: GPL-2.0-only

//! What a snapshot must show at a crash point.
//!
//! For every 4 KiB block the snapshot shows the origin as it was at the
//! `setup-done` mark, unless the workload wrote that block through the
//! snapshot. Then it shows the last snapshot write to the block that had
//! been acknowledged (its `ack-<id>` mark is in the replayed log) and whose
//! data is in the replayed COW, or any snapshot write to the block that had
//! not been acknowledged (it may or may not have reached the disk). A
//! snapshot write acknowledged whose data is not in the replayed log was
//! never flushed, and is allowed to be missing like any unflushed write.
//!
//! Origin writes do not change the snapshot's view: a store that let an
//! origin write reach the disk before the exception that saves the old
//! data was durable shows the new data instead, and is caught here.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;

use crate::log::Log;
use crate::replay::tagged_blocks;
use crate::replay::Geometry;
use crate::replay::Point;
use crate::replay::Slice;
use crate::tag::describe;
use crate::tag::Kind;
use crate::tag::Tag;
use crate::tag::BLOCK;

/// A snapshot write found in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SnapWrite {
    id: u64,
    /// First log entry that carries its data (in the COW slice).
    first_entry: usize,
    /// Its acknowledgement mark.
    ack: Option<usize>,
}

/// A block the snapshot shows wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    /// Byte offset on the snapshot.
    pub offset: u64,
    /// What the snapshot shows.
    pub shows: String,
    /// What it should show.
    pub expected: String,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "block at {} shows {}, expected {}",
            self.offset, self.shows, self.expected
        )
    }
}

/// The expected view of the snapshot through a log.
pub struct Oracle {
    original: Vec<u8>,
    writes: HashMap<u64, Vec<SnapWrite>>,
}

impl Oracle {
    /// The oracle of `log`, given the origin at the `setup-done` mark.
    pub fn new(log: &Log, geo: &Geometry, original: Vec<u8>, acks: &HashMap<u64, usize>) -> Self {
        let mut writes: HashMap<u64, Vec<SnapWrite>> = HashMap::new();
        for b in tagged_blocks(log, geo, Slice::Cow) {
            let t = b.tag;
            if t.kind != Kind::Snapshot || !b.intact {
                continue;
            }
            let v = writes.entry(t.offset).or_default();
            if !v.iter().any(|w| w.id == t.id) {
                v.push(SnapWrite {
                    id: t.id,
                    first_entry: b.entry,
                    ack: acks.get(&t.id).copied(),
                });
            }
        }
        Self { original, writes }
    }

    /// The origin at the `setup-done` mark.
    pub fn original(&self) -> &[u8] {
        &self.original
    }

    /// Number of distinct snapshot writes found.
    pub fn snapshot_writes(&self) -> usize {
        self.writes.values().map(Vec::len).sum()
    }

    /// Whether the workload wrote the block at byte `offset` through the
    /// snapshot: only then does the verdict on it depend on the crash
    /// state's [`Cut`].
    pub fn written(&self, offset: u64) -> bool {
        self.writes.contains_key(&offset)
    }

    /// Checks the whole view of the snapshot at a crash point; the first
    /// bad block if any.
    pub fn check(&self, p: Point, view: &[u8]) -> Result<(), Lost> {
        let holds = |entry: usize| p.holds(entry);
        let cut = Cut {
            acked_by: p.entry,
            holds: &holds,
        };
        self.check_view(&cut, view)
    }

    /// Checks the whole view of the snapshot in the crash state `cut`; the
    /// first bad block if any.
    pub fn check_view(&self, cut: &Cut<'_>, view: &[u8]) -> Result<(), Lost> {
        for (b, got) in view.chunks(BLOCK).enumerate() {
            self.check_block(cut, (b * BLOCK) as u64, got)?;
        }
        Ok(())
    }

    /// Checks one block of the snapshot's view (`got`, at byte `offset` of
    /// the snapshot) in the crash state `cut`.
    pub fn check_block(&self, cut: &Cut<'_>, offset: u64, got: &[u8]) -> Result<(), Lost> {
        let orig = usize::try_from(offset)
            .ok()
            .and_then(|o| self.original.get(o..o.checked_add(got.len())?))
            .unwrap_or(&[]);
        let Some(ws) = self.writes.get(&offset) else {
            if got == orig {
                return Ok(());
            }
            return Err(Lost {
                offset,
                shows: describe(got),
                expected: describe(orig),
            });
        };
        let durable =
            |w: &SnapWrite| w.ack.is_some_and(|a| a <= cut.acked_by) && (cut.holds)(w.first_entry);
        let last = ws.iter().filter(|w| durable(w)).max_by_key(|w| w.ack);
        let tag = |w: &SnapWrite| Tag {
            kind: Kind::Snapshot,
            id: w.id,
            offset,
        };
        let ok = match last {
            Some(w) => tag(w).matches(got),
            None => got == orig,
        } || ws
            .iter()
            .filter(|w| !durable(w))
            .any(|w| tag(w).matches(got));
        if ok {
            return Ok(());
        }
        let expected = match last {
            Some(w) => tag(w).to_string(),
            None => describe(orig),
        };
        Err(Lost {
            offset,
            shows: describe(got),
            expected,
        })
    }
}

/// What the oracle needs to know of a crash state: which acknowledgement
/// marks count, and which log entries' data the state holds.
///
/// A snapshot write must be shown once it was acknowledged (its mark is at
/// or before `acked_by`) and its data is in the state (`holds` its first
/// entry); until then the block may show the write or what it held before.
pub struct Cut<'a> {
    /// Acknowledgement marks at or before this entry index count.
    pub acked_by: usize,
    /// Whether the state holds the data of the log entry of this index.
    pub holds: &'a dyn Fn(usize) -> bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogBuilder;
    use crate::replay::Variant;

    const GEO: Geometry = Geometry {
        origin_start: 0,
        origin_len: 2 * 4096,
        cow_start: 2 * 4096,
        cow_len: 4 * 4096,
    };

    fn pat(at: u64) -> Vec<u8> {
        Tag {
            kind: Kind::Pattern,
            id: 0,
            offset: at,
        }
        .block()
    }
    fn snap(id: u64, at: u64) -> Vec<u8> {
        Tag {
            kind: Kind::Snapshot,
            id,
            offset: at,
        }
        .block()
    }

    fn oracle(log: &Log) -> Oracle {
        let original = [pat(0), pat(4096)].concat();
        let acks = crate::replay::ack_marks(log);
        Oracle::new(log, &GEO, original, &acks)
    }

    fn at(entry: usize) -> Point {
        Point {
            entry,
            variant: Variant::Durable,
        }
    }

    #[test]
    fn without_snapshot_writes_the_view_is_the_original() {
        let log = Log::parse(&LogBuilder::new(512).mark("setup-done").build()[..]).unwrap();
        let o = oracle(&log);
        assert_eq!(o.check(at(0), &[pat(0), pat(4096)].concat()), Ok(()));
        let lost = o.check(at(0), &[pat(0), pat(0)].concat()).unwrap_err();
        assert_eq!(lost.offset, 4096);
        assert!(lost.expected.contains("pattern of offset 4096"), "{lost}");
    }

    #[test]
    fn an_acknowledged_durable_snapshot_write_must_be_shown() {
        let mut b = LogBuilder::new(512);
        b.mark("setup-done") // 0
            .write(GEO.cow_start + 4096, 0, &snap(7, 4096)) // 1
            .mark("ack-7") // 2
            .flush(); // 3
        let log = Log::parse(&b.build()[..]).unwrap();
        let o = oracle(&log);
        assert_eq!(o.snapshot_writes(), 1);
        let old = [pat(0), pat(4096)].concat();
        let new = [pat(0), snap(7, 4096)].concat();
        // Before the acknowledgement either is fine.
        assert_eq!(o.check(at(1), &old), Ok(()));
        assert_eq!(o.check(at(1), &new), Ok(()));
        // After it, only the new data.
        assert_eq!(o.check(at(3), &new), Ok(()));
        let lost = o.check(at(3), &old).unwrap_err();
        assert!(lost.expected.contains("snapshot-write 7"), "{lost}");
    }

    #[test]
    fn a_later_unacknowledged_write_may_replace_the_last_acknowledged_one() {
        let mut b = LogBuilder::new(512);
        b.mark("setup-done")
            .write(GEO.cow_start, 0, &snap(1, 0))
            .mark("ack-1")
            .write(GEO.cow_start, 0, &snap(2, 0))
            .flush(); // 4
        let log = Log::parse(&b.build()[..]).unwrap();
        let o = oracle(&log);
        assert_eq!(o.check(at(4), &[snap(2, 0), pat(4096)].concat()), Ok(()));
        assert_eq!(o.check(at(4), &[snap(1, 0), pat(4096)].concat()), Ok(()));
        assert!(o.check(at(4), &[pat(0), pat(4096)].concat()).is_err());
    }

    #[test]
    fn an_acknowledged_write_not_yet_logged_may_be_missing() {
        let mut b = LogBuilder::new(512);
        b.mark("setup-done")
            .mark("ack-3")
            .write(GEO.cow_start, 0, &snap(3, 0))
            .flush();
        let log = Log::parse(&b.build()[..]).unwrap();
        let o = oracle(&log);
        let p = Point {
            entry: 1,
            variant: Variant::MarkPlus,
        };
        assert_eq!(o.check(p, &[pat(0), pat(4096)].concat()), Ok(()));
        assert!(o.check(at(3), &[pat(0), pat(4096)].concat()).is_err());
    }
}
