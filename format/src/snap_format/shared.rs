// SPDX-License-Identifier: GPL-2.0-only

//! The part of a store that `prepare_exception`, `usage` and
//! `drop_snapshot` reach: [`Shared`], kept behind a spinlock
//! ([`SharedLock`]).

use super::{
    error::Error,
    header::DiskHeader,
    layout::{
        Layout,
        Usage,
        INITIAL_NEXT_FREE, //
    }, //
};
use core::cmp::max;

/// The store state that dm-snapshot reaches outside the commit path: under
/// its own spinlocks (`prepare_exception`), under the snapshot lock
/// (`usage`), from any context (`drop_snapshot`). Every method is O(1) and
/// allocates nothing.
///
/// C: the fields `valid`, `next_free`, `current_area` and `pending_count` of
/// `struct pstore`. The other fields belong to the
/// [`Committer`](super::Committer), which updates these under the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shared {
    layout: Layout,
    pub(super) valid: bool,
    pub(super) next_free: u64,
    pub(super) current_area: u64,
    pub(super) pending_count: u32,
}

/// Where a store keeps its [`Shared`] state: a spinlock in the kernel.
pub trait SharedLock {
    /// Runs `f` with the state locked. `f` is O(1) and does no I/O.
    fn with<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> R;
}

impl Shared {
    /// The state of a store of `layout` with no exception, valid or not.
    ///
    /// C: what `persistent_ctr()` sets.
    pub const fn new(layout: Layout, valid: bool) -> Self {
        Self {
            layout,
            valid,
            next_free: INITIAL_NEXT_FREE,
            current_area: 0,
            pending_count: 0,
        }
    }

    /// Allocates the data chunk of a new exception on a COW device of
    /// `cow_sectors` sectors, moving `next_free` past metadata chunks.
    ///
    /// C: `persistent_prepare_exception()`. Unlike C, a `next_free` that is
    /// not a data chunk (C never produces one) is moved to the next data
    /// chunk before use.
    ///
    /// # Errors
    ///
    /// [`Error::NoSpace`] if the chunk does not fit on the device;
    /// [`Error::TooManyPending`] on counter overflow.
    pub fn prepare_exception(&mut self, cow_sectors: u64) -> Result<u64, Error> {
        let mut chunk = max(self.next_free, INITIAL_NEXT_FREE);
        if self.layout.is_metadata_chunk(chunk) {
            chunk = chunk.checked_add(1).ok_or(Error::Overflow)?;
        }
        // C: if (size < ((ps->next_free + 1) * store->chunk_size)) return -ENOSPC;
        let fits = chunk
            .checked_add(1)
            .and_then(|c| c.checked_mul(u64::from(self.layout.chunk_sectors())))
            .is_some_and(|end| end <= cow_sectors);
        if !fits {
            return Err(Error::NoSpace { chunk, cow_sectors });
        }
        let pending = self
            .pending_count
            .checked_add(1)
            .ok_or(Error::TooManyPending)?;
        let next = chunk
            .checked_add(1)
            .and_then(|c| self.layout.skip_metadata(c))
            .ok_or(Error::Overflow)?;
        self.pending_count = pending;
        self.next_free = next;
        Ok(chunk)
    }

    /// Usage figures for a COW device of `cow_sectors` sectors.
    ///
    /// C: `persistent_usage()`.
    pub fn usage(&self, cow_sectors: u64) -> Option<Usage> {
        self.layout
            .usage(self.next_free, self.current_area, cow_sectors)
    }

    /// Marks the store invalid and returns the header to write.
    ///
    /// C: `persistent_drop_snapshot()` up to `write_header()`.
    pub fn drop_snapshot(&mut self) -> DiskHeader {
        self.valid = false;
        self.header()
    }

    /// The header for the store's current validity.
    pub const fn header(&self) -> DiskHeader {
        DiskHeader::new(self.valid, self.layout.chunk_size())
    }

    /// The layout. C: `ps->exceptions_per_area` and `store->chunk_size`.
    pub const fn layout(&self) -> Layout {
        self.layout
    }

    /// Whether the store is valid. C: `ps->valid`.
    pub const fn is_valid(&self) -> bool {
        self.valid
    }

    /// Next chunk to allocate. C: `ps->next_free`.
    pub const fn next_free(&self) -> u64 {
        self.next_free
    }

    /// Area held in memory. C: `ps->current_area`.
    pub const fn current_area(&self) -> u64 {
        self.current_area
    }

    /// Prepared exceptions not committed yet. C: `ps->pending_count`.
    pub const fn pending_count(&self) -> u32 {
        self.pending_count
    }
}
