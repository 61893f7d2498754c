// SPDX-License-Identifier: GPL-2.0-only

//! Finding chunk numbers used twice, in memory that does not grow with the
//! number of exceptions.
//!
//! - COW chunks ([`NewChunks`]): a `new_chunk` that passed the module's
//!   rules lies on the device, so one bit per chunk of the device holds
//!   them all (the format core's [`ChunkBits`], as the module uses).
//! - Origin chunks ([`OldChunkFilter`]): any 56-bit value, so no bitmap of
//!   the values fits. The checking pass sets one bit per value in a hashed
//!   bitmap (at most [`OldChunkFilter::MAX_BITMAP_BYTES`]) and notes the
//!   bits that were set already. Only if there are such bits, more passes
//!   collect the values that fall on them (the duplicates and the hash
//!   collisions), as many passes as keep each collection within
//!   [`OldChunkFilter::MAX_PASS_BYTES`], and sorting each shows the
//!   duplicates exactly; only if there are duplicates, a last pass asks
//!   [`OldChunkDuplicates::is_repeat`] of each exception, in order, to
//!   report each repeat where it stands.

use snap_format::ChunkBits;

/// The COW chunks seen so far: one bit per chunk of the device.
#[derive(Clone, Debug)]
pub struct NewChunks {
    words: Vec<u64>,
}

impl NewChunks {
    /// An empty set for a device of `device_chunks` chunks.
    pub fn new(device_chunks: u64) -> Self {
        let words = ChunkBits::words_for(device_chunks).unwrap_or(0);
        Self {
            words: vec![0; words],
        }
    }

    /// Adds `chunk`; `false` if it was there already. A chunk past the
    /// device is not kept and counts as new (the module's rules refuse it
    /// on their own).
    pub fn insert(&mut self, chunk: u64) -> bool {
        ChunkBits::new(&mut self.words)
            .insert(chunk)
            .unwrap_or(true)
    }
}

/// The search for origin chunks used twice, before the reporting pass.
///
/// Feed every origin chunk once ([`OldChunkFilter::feed`]); then, for each
/// of the [`OldChunkFilter::start_second_passes`] passes, feed them all
/// again with [`OldChunkFilter::feed_again`] and end the pass with
/// [`OldChunkFilter::end_pass`]; [`OldChunkFilter::finish`] gives the
/// duplicates.
#[derive(Clone, Debug)]
pub struct OldChunkFilter {
    /// The hashed bitmap: the bits hit.
    bits: Vec<u64>,
    /// The bits hit more than once (as large as `bits`).
    again: Vec<u64>,
    /// log2 of the number of bits.
    shift: u32,
    /// How many values fall on a bit hit more than once.
    candidates_total: u64,
    /// The most bytes of values one second pass collects.
    pass_bytes: u64,
    /// Second passes: how many there are, and the values of this one.
    passes: u32,
    candidates: Vec<u64>,
    duplicates: Vec<u64>,
}

impl OldChunkFilter {
    /// The largest hashed bitmap, 2 MiB (and as much again for the bits hit
    /// twice), so that it stays in a processor's cache: past 16 million
    /// bits, the first pass slows down more than the second passes gain.
    pub const MAX_BITMAP_BYTES: usize = 2 << 20;

    /// The most memory one second pass collects values into, 16 MiB; more
    /// candidates take more passes.
    pub const MAX_PASS_BYTES: u64 = 16 << 20;

    /// A filter for at most `max_exceptions` exceptions: 16 bits per
    /// exception, rounded up to a power of two, within
    /// [`Self::MAX_BITMAP_BYTES`].
    pub fn new(max_exceptions: u64) -> Self {
        Self::with_pass_bytes(max_exceptions, Self::MAX_PASS_BYTES)
    }

    /// [`Self::new`] with another bound than [`Self::MAX_PASS_BYTES`] on
    /// the values one second pass collects (tests use tiny ones).
    pub fn with_pass_bytes(max_exceptions: u64, pass_bytes: u64) -> Self {
        let max_bits = (Self::MAX_BITMAP_BYTES as u64).saturating_mul(8);
        let bits = max_exceptions
            .saturating_mul(16)
            .clamp(64, max_bits)
            .next_power_of_two()
            .min(max_bits);
        let words = usize::try_from(bits / 64).unwrap_or(1);
        Self {
            bits: vec![0; words],
            again: vec![0; words],
            shift: bits.trailing_zeros(),
            candidates_total: 0,
            pass_bytes: pass_bytes.max(8),
            passes: 0,
            candidates: Vec::new(),
            duplicates: Vec::new(),
        }
    }

    /// The bit of `chunk`: the top bits of a multiplicative hash.
    fn bit(&self, chunk: u64) -> u32 {
        let h = chunk.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - self.shift);
        u32::try_from(h).unwrap_or(0)
    }

    fn word_of(bit: u32) -> (usize, u64) {
        (usize::try_from(bit >> 6).unwrap_or(0), 1u64 << (bit & 63))
    }

    /// First pass: feeds one origin chunk of every exception.
    pub fn feed(&mut self, chunk: u64) {
        let (word, mask) = Self::word_of(self.bit(chunk));
        let (Some(w), Some(a)) = (self.bits.get_mut(word), self.again.get_mut(word)) else {
            return;
        };
        if *w & mask == 0 {
            *w |= mask;
            return;
        }
        // A value on a bit hit before: one more candidate, and one for the
        // first value of the bit when it becomes a suspect.
        let first = *a & mask == 0;
        *a |= mask;
        self.candidates_total = self
            .candidates_total
            .saturating_add(if first { 2 } else { 1 });
    }

    /// Ends the first pass: from now on the bitmap holds only the bits hit
    /// more than once. Returns how many second passes collect the values
    /// that fall on those bits, each into at most
    /// [`Self::MAX_PASS_BYTES`]: 0 if no bit was hit twice, so that no
    /// origin chunk occurs twice.
    pub fn start_second_passes(&mut self) -> u32 {
        if self.candidates_total == 0 {
            return 0;
        }
        self.bits = core::mem::take(&mut self.again);
        let bytes = self.candidates_total.saturating_mul(8);
        self.passes = u32::try_from(bytes.div_ceil(self.pass_bytes).max(1)).unwrap_or(u32::MAX);
        self.passes
    }

    /// Second pass `pass`: feeds one origin chunk of every exception again.
    pub fn feed_again(&mut self, pass: u32, chunk: u64) {
        let bit = self.bit(chunk);
        let (word, mask) = Self::word_of(bit);
        if self.bits.get(word).is_some_and(|w| w & mask != 0)
            && bit.checked_rem(self.passes) == Some(pass)
        {
            self.candidates.push(chunk);
            // Many copies of a few values (a badly damaged store) would
            // fill one pass beyond its share: keep one copy of each.
            let limit = usize::try_from(self.pass_bytes / 8).unwrap_or(usize::MAX);
            if self.candidates.len() > limit.saturating_mul(2) {
                self.compact();
            }
        }
    }

    /// Moves the values collected more than once to the duplicates and
    /// keeps one copy of each value.
    fn compact(&mut self) {
        self.candidates.sort_unstable();
        for w in self.candidates.windows(2) {
            if let [a, b] = w {
                if a == b && self.duplicates.last() != Some(a) {
                    self.duplicates.push(*a);
                }
            }
        }
        self.candidates.dedup();
    }

    /// Ends a second pass: keeps the values it collected more than once.
    pub fn end_pass(&mut self) {
        self.compact();
        self.candidates.clear();
    }

    /// The origin chunks that occur more than once.
    pub fn finish(mut self) -> OldChunkDuplicates {
        self.duplicates.sort_unstable();
        self.duplicates.dedup();
        let seen = vec![false; self.duplicates.len()];
        let left = vec![0; self.duplicates.len()];
        OldChunkDuplicates {
            values: self.duplicates,
            seen,
            left,
        }
    }
}

/// The origin chunks that occur more than once, for the reporting pass.
#[derive(Clone, Debug, Default)]
pub struct OldChunkDuplicates {
    values: Vec<u64>,
    seen: Vec<bool>,
    /// Occurrences not yet met in the pass of [`Self::is_superseded`].
    left: Vec<u64>,
}

impl OldChunkDuplicates {
    /// Whether `chunk` was seen before in this pass (the first occurrence
    /// of a duplicated chunk is not a repeat, the later ones are).
    pub fn is_repeat(&mut self, chunk: u64) -> bool {
        let Ok(i) = self.values.binary_search(&chunk) else {
            return false;
        };
        self.seen
            .get_mut(i)
            .is_some_and(|seen| core::mem::replace(seen, true))
    }

    /// Counts one occurrence of `chunk`, in a pass over every exception
    /// before a pass asking [`Self::is_superseded`].
    pub fn count(&mut self, chunk: u64) {
        if let Ok(i) = self.values.binary_search(&chunk) {
            if let Some(n) = self.left.get_mut(i) {
                *n = n.saturating_add(1);
            }
        }
    }

    /// How many occurrences counted by [`Self::count`] a later one maps
    /// again: all but the last of each duplicated chunk.
    pub fn superseded(&self) -> u64 {
        self.left.iter().map(|n| n.saturating_sub(1)).sum()
    }

    /// Whether a later exception maps `chunk` again, after a pass of
    /// [`Self::count`]: true for every occurrence of a duplicated chunk
    /// but the last.
    pub fn is_superseded(&mut self, chunk: u64) -> bool {
        let Ok(i) = self.values.binary_search(&chunk) else {
            return false;
        };
        self.left.get_mut(i).is_some_and(|n| {
            *n = n.saturating_sub(1);
            *n > 0
        })
    }

    /// How many origin chunks occur more than once.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no origin chunk occurs twice.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}
