// SPDX-License-Identifier: GPL-2.0-only

//! Duplicate `new_chunk` detection for the activation scan.

use super::{
    layout::Layout,
    records::read_exception, //
};

/// The chunks below which every `new_chunk` of areas `0..=area` lies in a
/// store whose chunks were allocated in order, as both stores allocate
/// them: `area_location(area + 1)`, the next area's metadata chunk.
///
/// The activation scan keeps one bit per chunk below this bound (at the
/// last area read), so its bitmap grows with the areas read, by
/// `chunk_bytes / 128` bytes each, whatever a record claims; a record
/// beyond it is an outlier, kept in a list (8 bytes per record read) and
/// checked against the bitmap and the other outliers when the scan ends.
/// Hostile or not, no record sizes an allocation.
pub fn in_order_bound(layout: Layout, area: u64) -> Option<u64> {
    layout.area_location(area.checked_add(1)?)
}

/// A set of chunks, one bit per chunk, over words the caller owns (and
/// grows: [`ChunkBits::words_for`] says how many a chunk needs). The
/// activation scan uses it to refuse two exceptions sharing one COW chunk,
/// with memory bounded by one bit per chunk up to the highest `new_chunk`.
///
/// No C counterpart (C accepts such a store, and one snapshot chunk then
/// shows another's data).
pub struct ChunkBits<'a> {
    words: &'a mut [u64],
}

impl<'a> ChunkBits<'a> {
    /// The set over `words` (zeroed by the caller for an empty set).
    pub fn new(words: &'a mut [u64]) -> Self {
        Self { words }
    }

    /// Words needed to hold `chunk`.
    pub fn words_for(chunk: u64) -> Option<usize> {
        usize::try_from(chunk.wrapping_shr(6).checked_add(1)?).ok()
    }

    /// Whether `chunk` is in the set (`false` beyond the words).
    pub fn contains(&self, chunk: u64) -> bool {
        let (Ok(word), Ok(shift)) = (
            usize::try_from(chunk.wrapping_shr(6)),
            u32::try_from(chunk & 63),
        ) else {
            return false;
        };
        let bit = 1u64.wrapping_shl(shift);
        self.words.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Adds `chunk`; `Some(false)` if it was there already, `None` if the
    /// words are too few.
    pub fn insert(&mut self, chunk: u64) -> Option<bool> {
        let word = usize::try_from(chunk.wrapping_shr(6)).ok()?;
        let bit = 1u64.wrapping_shl(u32::try_from(chunk & 63).ok()?);
        let w = self.words.get_mut(word)?;
        let fresh = *w & bit == 0;
        *w |= bit;
        Some(fresh)
    }
}

/// The index of the first record of `area` from index `from` on (up to its
/// end marker) whose `new_chunk` is `chunk`; used to name the two records
/// that share a chunk.
pub fn find_new_chunk(area: &[u8], chunk: u64, from: u32) -> Option<u32> {
    let mut index = from;
    while let Some(e) = read_exception(area, index) {
        if e.is_end_marker() {
            return None;
        }
        if e.new_chunk == chunk {
            return Some(index);
        }
        index = index.checked_add(1)?;
    }
    None
}
