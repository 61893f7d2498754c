// SPDX-License-Identifier: GPL-2.0-only

//! The validating activation scan over the metadata areas.

#[cfg(doc)]
use super::{
    committer::Committer, //
    duplicates::{
        find_new_chunk,
        in_order_bound,
        ChunkBits, //
    },
};
use super::{
    error::{
        Error,
        Warning, //
    },
    layout::{
        AreaIo,
        Layout, //
    },
    records::{
        read_exception,
        Exception, //
    }, //
};
use core::{
    cmp::max,
    convert::Infallible,
    fmt, //
};

/// How many metadata areas the activation scan reads ahead.
///
/// C: `DM_PREFETCH_CHUNKS`.
pub const DM_PREFETCH_CHUNKS: u64 = 12;

/// The metadata the module's activation keeps read ahead: 1 MiB, 256 areas
/// of 4 KiB chunks. C's twelve areas are 48 KiB at 4 KiB chunks, a few
/// reads in flight, which leaves a device with a millisecond of latency
/// idle most of the time; a deeper window keeps it busy, and its bound
/// keeps the memory (dm-bufio buffers for the window) fixed.
pub const PREFETCH_BYTES: u64 = 1 << 20;

/// How many areas the module's activation reads ahead for `layout`: as
/// many as [`PREFETCH_BYTES`] holds, never fewer than C's
/// [`DM_PREFETCH_CHUNKS`]: 256 areas at 4 KiB chunks, 16 at 64 KiB, C's
/// twelve from 128 KiB on.
pub fn prefetch_window(layout: Layout) -> u64 {
    // A chunk is at least one sector, so the division does not fail.
    PREFETCH_BYTES
        .checked_div(u64::from(layout.chunk_bytes()))
        .filter(|&areas| areas > DM_PREFETCH_CHUNKS)
        .unwrap_or(DM_PREFETCH_CHUNKS)
}

/// What one scanned area turned out to be, and what is left of the scan.
///
/// C: the `full` output of `insert_exceptions()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AreaFill {
    /// No end marker: every record is an exception; the scan goes on with
    /// the next area.
    Full(Scan),
    /// An end marker at index [`ScanResult::current_committed`]: the scan
    /// is over, with its result.
    ///
    /// C: the end of `read_exceptions()` (`current_area--`,
    /// `skip_metadata()`).
    Partial(ScanResult),
}

/// The outcome of a finished scan.
///
/// C: the `struct pstore` fields set by `read_exceptions()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScanResult {
    /// Index of the last, partial area. C: `current_area`.
    pub current_area: u64,
    /// Exceptions in that area. C: `current_committed`.
    pub current_committed: u32,
    /// Next chunk to allocate. C: `next_free`.
    pub next_free: u64,
    /// Exceptions reported to the visitor.
    pub exceptions: u64,
    /// Nonzero records after the end marker, if any.
    pub warning: Option<Warning>,
}

/// Why [`Scan::scan_area`] stopped before the end of an area.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanStop<E> {
    /// The area breaks a rule of the scan.
    Format(Error),
    /// The visitor's error, as the visitor returned it.
    Visitor(E),
}

impl<E> From<Error> for ScanStop<E> {
    fn from(e: Error) -> Self {
        Self::Format(e)
    }
}

impl ScanStop<Infallible> {
    /// The format error of a scan whose visitor cannot fail.
    pub fn into_format(self) -> Error {
        match self {
            Self::Format(e) => e,
            Self::Visitor(never) => match never {},
        }
    }
}

/// A scan stopped in an area: why (`S` is [`ScanStop`] for
/// [`Scan::scan_area`], [`Error`] for [`Scan::validate_area`] and
/// [`Scan::check_area`]), and the scan as it was before that area, for
/// [`Scan::cow_too_small`].
///
/// No C counterpart (C's `read_exceptions()` returns the error alone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped<S> {
    /// Why the scan stopped.
    pub stop: S,
    /// The scan before the area: nothing of the area is counted in it.
    pub scan: Scan,
}

/// The validating activation scan over the metadata areas.
///
/// C: `read_exceptions()` and `insert_exceptions()`.
///
/// Drive it with [`Scan::next_area`] (which chunk to read next),
/// [`Scan::next_prefetch`] (optional read-ahead) and [`Scan::scan_area`]
/// (hand over the bytes read). Each area scanned consumes the scan: a full
/// area gives back the scan of the next one ([`AreaFill::Full`]), the last,
/// partial area the [`ScanResult`] ([`AreaFill::Partial`]), after which no
/// scan is left to call; a stop gives back the scan as it was before the
/// area ([`Stopped`]). [`scan_areas`] does this loop for callers that can
/// read into a buffer.
///
/// A scan that scanned an area is gone, so calls out of order do not
/// compile:
///
/// ```compile_fail
/// # use snap_format::{Layout, Scan};
/// # fn f(layout: Layout, area: &[u8]) {
/// let scan = Scan::new(layout, 100);
/// let fill = scan.validate_area(area);
/// let again = scan.validate_area(area); // use of moved value `scan`
/// # }
/// ```
///
/// # Validation rules
///
/// The metadata is untrusted. Each exception before the end marker must
/// pass these rules; the first broken one stops the scan with its error.
///
/// | rule | C checks it | this store |
/// |---|---|---|
/// | `new_chunk` is the header chunk | no (0 is the end marker, so no record can point at the header) | impossible on disk; [`Error::NewChunkIsHeader`] guards commits |
/// | `new_chunk` is a metadata-area chunk | no | [`Error::NewChunkIsMetadata`] |
/// | `new_chunk` at/after the end of the COW device (whole chunks), which also covers values of 2^56 and above that would corrupt dm's consecutive-chunk count | no | [`Error::NewChunkBeyondDevice`] |
/// | `old_chunk` past the largest possible block device (2^63-1 bytes) or past 56 bits | no | [`Error::OldChunkTooLarge`] |
/// | an area to read lies beyond the device end (previous area full) | no (its read fails) | [`Error::AreaBeyondDevice`] before any read |
/// | nonzero bytes in/after the end-marker record | no (ignored) | ignored as in C, reported as [`Warning::GarbageAfterEndMarker`], cleared by [`Committer::from_scan`] and written back before the first commit's record ([`Committer::commit_exception`]), never at activation, so that no later crash can revive them |
/// | duplicate `new_chunk` | no | [`Error::DuplicateNewChunk`], found by the caller with [`ChunkBits`] (one bit per chunk below [`in_order_bound`], a sorted list for the records beyond it) and named with [`find_new_chunk`] |
/// | duplicate `old_chunk` | no | not checked, as with C: which mapping dm-snapshot's hash table returns depends on the order in the slot |
/// | `new_chunk` outside the stretch of its own area | no | not checked: stores written by old kernels committed out of order |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    layout: Layout,
    cow_chunks: u64,
    current_area: u64,
    prefetch_area: u64,
    prefetch_window: u64,
    max_new_chunk: Option<u64>,
    exceptions: u64,
}

impl Scan {
    /// Starts a scan of a COW device of `cow_sectors` sectors.
    ///
    /// C: the start of `read_exceptions()` (`ps->current_area = 0`).
    pub const fn new(layout: Layout, cow_sectors: u64) -> Self {
        Self {
            layout,
            cow_chunks: layout.device_chunks(cow_sectors),
            current_area: 0,
            prefetch_area: 0,
            prefetch_window: DM_PREFETCH_CHUNKS,
            max_new_chunk: None,
            exceptions: 0,
        }
    }

    /// The same scan reading `areas` areas ahead instead of C's
    /// [`DM_PREFETCH_CHUNKS`] (see [`prefetch_window`]).
    #[must_use]
    pub const fn with_prefetch_window(mut self, areas: u64) -> Self {
        self.prefetch_window = areas;
        self
    }

    /// The area to read next. A scan is over only once a partial area was
    /// scanned, which consumes it, so there always is one.
    ///
    /// C: the loop condition of `read_exceptions()` and its
    /// `area_location()` call.
    ///
    /// # Errors
    ///
    /// [`Error::AreaBeyondDevice`] if the area does not lie on the device.
    pub fn next_area(&self) -> Result<AreaIo, Error> {
        let io = self
            .layout
            .area_io(self.current_area)
            .ok_or(Error::Overflow)?;
        if io.chunk >= self.cow_chunks {
            return Err(Error::AreaBeyondDevice {
                area: io.area,
                chunk: io.chunk,
                cow_chunks: self.cow_chunks,
            });
        }
        Ok(io)
    }

    /// The next chunk to prefetch before reading the current area, or
    /// `None` when the read-ahead window (current area plus
    /// [`DM_PREFETCH_CHUNKS`], or the window set by
    /// [`Scan::with_prefetch_window`]) is covered or reaches the device
    /// end. Call it in a loop before each [`Scan::scan_area`]; the scan of
    /// the next area ([`AreaFill::Full`]) remembers what was prefetched.
    ///
    /// C: the `dm_bufio_prefetch()` loop of `read_exceptions()`.
    pub fn next_prefetch(&mut self) -> Option<u64> {
        self.prefetch_area = max(self.prefetch_area, self.current_area);
        if self.prefetch_area > self.current_area.saturating_add(self.prefetch_window) {
            return None;
        }
        let chunk = self.layout.area_location(self.prefetch_area)?;
        if chunk >= self.cow_chunks {
            return None;
        }
        self.prefetch_area = self.prefetch_area.checked_add(1)?;
        Some(chunk)
    }

    /// Scans the bytes of the area named by [`Scan::next_area`], calling
    /// `visit` for each exception before the end marker, in order. A visit
    /// error stops the scan (C: the callback's return value) and comes back
    /// as it was returned, in [`ScanStop::Visitor`].
    ///
    /// # Errors
    ///
    /// [`ScanStop::Format`] with a validation error (see [`Scan`]), or
    /// [`Error::BufferSize`] if `area` is not one chunk; [`ScanStop::Visitor`].
    /// Either comes with the scan as it was before the area.
    pub fn scan_area<E, V>(
        self,
        area: &[u8],
        mut visit: V,
    ) -> Result<AreaFill, Stopped<ScanStop<E>>>
    where
        V: FnMut(Exception) -> Result<(), E>,
    {
        self.walk_area(area, |_, e, checked| {
            checked?;
            visit(e).map_err(ScanStop::Visitor)
        })
    }

    /// [`Scan::scan_area`] for a caller that only needs the scan's verdict
    /// on the area, not its exceptions.
    ///
    /// # Errors
    ///
    /// As [`Scan::scan_area`].
    pub fn validate_area(self, area: &[u8]) -> Result<AreaFill, Stopped<Error>> {
        self.walk_area(area, |_, _, checked| checked.map_err(ScanStop::Format))
            .map_err(Stopped::into_format)
    }

    /// Scans the bytes of the area named by [`Scan::next_area`] as
    /// [`Scan::scan_area`] does, but goes on past a record that breaks a
    /// rule: `visit` gets every record before the end marker, with its index
    /// and the first rule it breaks, if any. The scan's state moves on as
    /// if the broken records were not there, so that a checker reports every
    /// problem of a store with the rules of the activation scan; the first
    /// broken rule is where an activation would have stopped.
    ///
    /// # Errors
    ///
    /// [`Error::BufferSize`] if `area` is not one chunk,
    /// [`Error::AreaBeyondDevice`] if the area does not lie on the device,
    /// with the scan as it was before the area.
    pub fn check_area<V>(self, area: &[u8], mut visit: V) -> Result<AreaFill, Stopped<Error>>
    where
        V: FnMut(u32, Exception, Option<Error>),
    {
        self.walk_area(area, |index, e, checked| {
            visit(index, e, checked.err());
            Ok(())
        })
        .map_err(Stopped::into_format)
    }

    /// The walk of [`Scan::scan_area`] and [`Scan::check_area`], handing
    /// back the scan untouched if it stops.
    fn walk_area<E, S>(self, area: &[u8], step: S) -> Result<AreaFill, Stopped<ScanStop<E>>>
    where
        S: FnMut(u32, Exception, Result<(), Error>) -> Result<(), ScanStop<E>>,
    {
        match self.walk(area, step) {
            Ok(fill) => Ok(fill),
            Err(stop) => Err(Stopped { stop, scan: self }),
        }
    }

    /// `step` gets each record before the end marker with the result of
    /// its rules and says whether to go on; only records that pass count as
    /// exceptions of the store.
    fn walk<E, S>(&self, area: &[u8], mut step: S) -> Result<AreaFill, ScanStop<E>>
    where
        S: FnMut(u32, Exception, Result<(), Error>) -> Result<(), ScanStop<E>>,
    {
        self.next_area()?;
        self.layout.check_area_len(area.len())?;
        let mut max_new_chunk = self.max_new_chunk;
        let mut exceptions = self.exceptions;
        let epa = self.layout.exceptions_per_area();
        // Records by index rather than `chunks_exact()`, whose length
        // division leaves a panic call that objtool (7.3) does not know as
        // noreturn in the kernel build.
        for index in 0..epa {
            let e = read_exception(area, index).ok_or(Error::Overflow)?;
            if e.is_end_marker() {
                // The scan ends here: see `AreaFill::Partial`.
                return Ok(AreaFill::Partial(ScanResult {
                    current_area: self.current_area,
                    current_committed: index,
                    next_free: self
                        .layout
                        .next_free_after_scan(max_new_chunk)
                        .ok_or(Error::Overflow)?,
                    exceptions,
                    warning: garbage_after(area, self.current_area, index),
                }));
            }
            let checked =
                self.layout
                    .check_exception(self.current_area, index, e, Some(self.cow_chunks));
            if checked.is_ok() {
                max_new_chunk = Some(max(max_new_chunk.unwrap_or(0), e.new_chunk));
                exceptions = exceptions.saturating_add(1);
            }
            step(index, e, checked)?;
        }
        Ok(AreaFill::Full(Self {
            current_area: self.current_area.checked_add(1).ok_or(Error::Overflow)?,
            max_new_chunk,
            exceptions,
            ..*self
        }))
    }
}

impl Stopped<ScanStop<Infallible>> {
    /// The format error of a stop whose visitor cannot fail.
    fn into_format(self) -> Stopped<Error> {
        Stopped {
            stop: self.stop.into_format(),
            scan: self.scan,
        }
    }
}

/// Looks for nonzero records from index `end` (the end marker) on.
fn garbage_after(area: &[u8], area_index: u64, end: u32) -> Option<Warning> {
    let mut first = None;
    let mut records = 0u32;
    let mut index = end;
    while let Some(e) = read_exception(area, index) {
        if e != Exception::default() {
            first = first.or(Some(index));
            records = records.saturating_add(1);
        }
        index = index.checked_add(1)?;
    }
    Some(Warning::GarbageAfterEndMarker {
        area: area_index,
        end,
        first: first?,
        records,
    })
}

/// Runs a whole activation scan, reading each area into `area` with
/// `read_chunk(chunk, buf)` and forwarding exceptions to `visit`. On
/// success `area` holds the last, partial area, ready for
/// [`Committer::from_scan`].
///
/// C: `read_exceptions()` (without the read-ahead).
///
/// # Errors
///
/// [`Error::ReadFailed`] with the errno `read_chunk` returned, or any error
/// of [`Scan::next_area`] and [`Scan::scan_area`].
pub fn scan_areas<R, V>(
    layout: Layout,
    cow_sectors: u64,
    area: &mut [u8],
    mut read_chunk: R,
    mut visit: V,
) -> Result<ScanResult, Error>
where
    R: FnMut(u64, &mut [u8]) -> Result<(), i32>,
    V: FnMut(Exception) -> Result<(), i32>,
{
    layout.check_area_len(area.len())?;
    let mut scan = Scan::new(layout, cow_sectors);
    loop {
        let io = scan.next_area()?;
        read_chunk(io.chunk, area).map_err(|errno| Error::ReadFailed {
            chunk: io.chunk,
            errno,
        })?;
        let fill = scan
            .scan_area(area, &mut visit)
            .map_err(|stopped| match stopped.stop {
                ScanStop::Format(e) => e,
                ScanStop::Visitor(errno) => Error::Callback { errno },
            })?;
        match fill {
            AreaFill::Full(next) => scan = next,
            AreaFill::Partial(result) => return Ok(result),
        }
    }
}

/// How large a COW device must be to load, when the scan stopped because
/// the store does not fit it ([`Error::NewChunkBeyondDevice`],
/// [`Error::AreaBeyondDevice`]): typically a snapshot volume reduced below
/// its usage. Logged after the error, so that extending the device back is
/// the obvious way out; [`Scan::cow_too_small`] makes one.
///
/// No C counterpart (C loads such a store and fails the reads and writes
/// that reach past the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CowTooSmall {
    /// Sectors on the COW device.
    pub cow_sectors: u64,
    /// Sectors the store needs: through the highest chunk its exceptions
    /// use, or through the first metadata area past the device end.
    pub needed_sectors: u64,
    /// Whether the scan read the last area, so that `needed_sectors` is
    /// what the store needs; otherwise areas beyond the device end could
    /// not be read and it is a lower bound.
    pub exact: bool,
}

impl fmt::Display for CowTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            cow_sectors,
            needed_sectors,
            exact,
        } = self;
        if *exact {
            write!(
                f,
                "COW device of {cow_sectors} sectors is too small for its exceptions: it must have {needed_sectors} sectors or more to load"
            )
        } else {
            write!(
                f,
                "COW device of {cow_sectors} sectors is too small for its exceptions: it must have at least {needed_sectors} sectors to load (its last metadata areas are beyond its end; its size before it shrank is enough)"
            )
        }
    }
}

impl Scan {
    /// The size a COW device needs for the store whose scan stopped with
    /// `error`, or `None` for any other error. `self` is the scan of the
    /// area at fault: the one [`Scan::next_area`] failed on, or the one
    /// [`Stopped`] gives back; `area` holds the bytes of the area that broke
    /// the rule ([`Error::NewChunkBeyondDevice`]); the highest chunk used is
    /// taken over it and the areas before.
    pub fn cow_too_small(&self, error: &Error, area: Option<&[u8]>) -> Option<CowTooSmall> {
        let seen = self.max_new_chunk.unwrap_or(0);
        let (chunks, exact) = match *error {
            Error::NewChunkBeyondDevice { area: index, .. } => {
                let bytes = area?;
                let mut highest = seen;
                let mut full = true;
                for i in 0..self.layout.exceptions_per_area() {
                    let e = read_exception(bytes, i)?;
                    if e.is_end_marker() {
                        full = false;
                        break;
                    }
                    highest = max(highest, e.new_chunk);
                }
                if full {
                    // The next area follows this one's chunks: it is
                    // beyond the end too, and may hold more.
                    let next = self.layout.area_location(index.checked_add(1)?)?;
                    (max(highest, next).checked_add(1)?, false)
                } else {
                    (highest.checked_add(1)?, true)
                }
            }
            Error::AreaBeyondDevice { chunk, .. } => (max(seen, chunk).checked_add(1)?, false),
            _ => return None,
        };
        Some(CowTooSmall {
            cow_sectors: self
                .cow_chunks
                .checked_mul(u64::from(self.layout.chunk_sectors()))?,
            needed_sectors: chunks.checked_mul(u64::from(self.layout.chunk_sectors()))?,
            exact,
        })
    }
}
