// SPDX-License-Identifier: GPL-2.0-only

//! Tagged 4 KiB blocks: every block the workload writes says what it is
//! (which write, to which device, at which offset), so that the replayer can
//! tell from the log alone which write each logged block belongs to, and the
//! oracle can name what a snapshot block shows.
//!
//! Layout of a block (little endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | [`MAGIC`] |
//! | 8..16 | write id |
//! | 16..20 | [`Kind`] |
//! | 20..24 | reserved, 0 |
//! | 24..32 | byte offset on the device the block was written to |
//! | 32..4096 | fill derived from the three fields above |

#![forbid(unsafe_code)]

/// Size of a tagged block.
pub const BLOCK: usize = 4096;

/// First 8 bytes of every tagged block.
pub const MAGIC: [u8; 8] = *b"DMSCRSH1";

/// What a tagged block was written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The initial contents of the origin (written before `setup-done`).
    Pattern,
    /// A workload write to the origin (through `snapshot-origin`).
    Origin,
    /// A workload write to the snapshot device.
    Snapshot,
    /// Stale data left on a COW device before a store is created on it.
    Garbage,
}

impl Kind {
    const fn code(self) -> u32 {
        match self {
            Self::Pattern => 1,
            Self::Origin => 2,
            Self::Snapshot => 3,
            Self::Garbage => 4,
        }
    }

    const fn from_code(c: u32) -> Option<Self> {
        match c {
            1 => Some(Self::Pattern),
            2 => Some(Self::Origin),
            3 => Some(Self::Snapshot),
            4 => Some(Self::Garbage),
            _ => None,
        }
    }

    /// A short name for messages.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pattern => "pattern",
            Self::Origin => "origin-write",
            Self::Snapshot => "snapshot-write",
            Self::Garbage => "garbage",
        }
    }
}

/// The identity of a tagged block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    /// What it was written as.
    pub kind: Kind,
    /// Write id (0 for pattern and garbage blocks).
    pub id: u64,
    /// Byte offset on the device it was written to.
    pub offset: u64,
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Kind::Origin | Kind::Snapshot => {
                write!(
                    f,
                    "{} {} (for offset {})",
                    self.kind.name(),
                    self.id,
                    self.offset
                )
            }
            _ => write!(f, "{} of offset {}", self.kind.name(), self.offset),
        }
    }
}

/// A small deterministic generator (splitmix64): the tags' fill, and the
/// crate's other test data (mutants, fault-test patterns).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// An element of `items`, which must not be empty.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Fills `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            let w = self.next_u64().to_le_bytes();
            word.copy_from_slice(&w[..word.len()]);
        }
    }
}

impl Tag {
    /// Fills `buf` (at least [`BLOCK`] bytes; only the first [`BLOCK`] are
    /// written) with the block of this tag.
    pub fn fill(&self, buf: &mut [u8]) {
        let Some(block) = buf.get_mut(..BLOCK) else {
            return;
        };
        block.fill(0);
        let code = self.kind.code();
        let mut head = [0u8; 32];
        head[..8].copy_from_slice(&MAGIC);
        head[8..16].copy_from_slice(&self.id.to_le_bytes());
        head[16..20].copy_from_slice(&code.to_le_bytes());
        head[24..32].copy_from_slice(&self.offset.to_le_bytes());
        block[..32].copy_from_slice(&head);
        Rng::new(self.id ^ (u64::from(code) << 56) ^ self.offset.rotate_left(17))
            .fill(&mut block[32..]);
    }

    /// The block of this tag.
    pub fn block(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK];
        self.fill(&mut b);
        b
    }

    /// The tag a block carries in its first 32 bytes, if it has one (the
    /// fill is not checked; see [`Tag::matches`]).
    pub fn parse(block: &[u8]) -> Option<Self> {
        let head = block.get(..32)?;
        if head[..8] != MAGIC {
            return None;
        }
        let id = u64::from_le_bytes(head[8..16].try_into().ok()?);
        let kind = Kind::from_code(u32::from_le_bytes(head[16..20].try_into().ok()?))?;
        let offset = u64::from_le_bytes(head[24..32].try_into().ok()?);
        Some(Self { kind, id, offset })
    }

    /// Whether `block` is exactly the block of this tag.
    pub fn matches(&self, block: &[u8]) -> bool {
        block.len() == BLOCK && block == self.block().as_slice()
    }
}

/// What a block holds, for messages: its tag (marked torn if the rest does
/// not match), "zeros", or "unknown data".
pub fn describe(block: &[u8]) -> String {
    match Tag::parse(block) {
        Some(t) if t.matches(block) => t.to_string(),
        Some(t) => format!("a damaged block of {t}"),
        None if block.iter().all(|&b| b == 0) => "zeros".to_string(),
        None => "unknown data".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_parses_back_to_its_tag_and_matches_only_itself() {
        let t = Tag {
            kind: Kind::Snapshot,
            id: 42,
            offset: 8192,
        };
        let b = t.block();
        assert_eq!(Tag::parse(&b), Some(t));
        assert!(t.matches(&b));
        let other = Tag {
            kind: Kind::Origin,
            id: 42,
            offset: 8192,
        };
        assert!(!other.matches(&b));
        let mut damaged = b.clone();
        damaged[4000] ^= 1;
        assert!(!t.matches(&damaged));
        assert_eq!(Tag::parse(&damaged), Some(t));
        assert!(describe(&damaged).starts_with("a damaged block"));
    }

    #[test]
    fn untagged_blocks_have_no_tag() {
        assert_eq!(Tag::parse(&[0u8; BLOCK]), None);
        assert_eq!(describe(&[0u8; BLOCK]), "zeros");
        assert_eq!(describe(&[7u8; BLOCK]), "unknown data");
        assert_eq!(Tag::parse(&[0u8; 8]), None);
    }

    #[test]
    fn different_tags_give_different_fills() {
        let a = Tag {
            kind: Kind::Pattern,
            id: 0,
            offset: 0,
        }
        .block();
        let b = Tag {
            kind: Kind::Pattern,
            id: 0,
            offset: 4096,
        }
        .block();
        assert_ne!(a[32..], b[32..]);
    }
}
