// SPDX-License-Identifier: GPL-2.0-only

//! A set of chunk numbers, to find duplicate `old_chunk` or `new_chunk`
//! values. Its memory grows with the number of exceptions (about 18 bytes
//! per chunk at the hash table's load factor); only `snap_check` and the
//! validation pass of `snap_restore` use it.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::hash::Hasher;

/// A multiplicative hasher for `u64` keys (chunk numbers are not chosen by
/// an attacker who gains anything from collisions: the worst case is a
/// slow check).
#[derive(Clone, Copy, Debug, Default)]
pub struct ChunkHasher {
    hash: u64,
}

impl Hasher for ChunkHasher {
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        // Fibonacci hashing; the rotate brings the well-mixed high bits to
        // the low bits the table indexes with.
        self.hash = (self.hash ^ v)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(26);
    }
}

/// A set of chunk numbers.
#[derive(Clone, Debug, Default)]
pub struct ChunkSet {
    set: HashSet<u64, BuildHasherDefault<ChunkHasher>>,
}

impl ChunkSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `chunk`; returns `false` if it was already there.
    pub fn insert(&mut self, chunk: u64) -> bool {
        self.set.insert(chunk)
    }

    /// Number of chunks in the set.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}
