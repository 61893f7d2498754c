// SPDX-License-Identifier: GPL-2.0-only

//! The dm-log-writes log format (drivers/md/dm-log-writes.c,
//! Documentation/admin-guide/device-mapper/log-writes.rst).
//!
//! The log device starts with a super block, in a block of `sectorsize`
//! bytes (the logical block size of the logged device):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `0x6a736677736872` |
//! | 8..16 | version, 1 |
//! | 16..24 | number of entries |
//! | 24..28 | sectorsize |
//!
//! Entries follow from byte `sectorsize` on, each one block holding
//! `sector`, `nr_sectors`, `flags`, `data_len` (u64 each; `sector` and
//! `nr_sectors` count `sectorsize` blocks of the logged device), then, for
//! a write, its `nr_sectors` blocks of data. A mark keeps its text in the
//! entry block after the four fields (`data_len` bytes) and has no data
//! blocks; a discard has no data blocks either.
//!
//! Writes are logged when they complete, plain writes only when the next
//! flush completes (just before that flush's entry); FUA writes and marks
//! are logged at once.

#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::io::Read;

/// Magic number of the super block.
pub const LOG_MAGIC: u64 = 0x006a_7366_7773_6872;
/// The log version this parser reads.
pub const LOG_VERSION: u64 = 1;
/// The write carried `REQ_PREFLUSH`.
pub const FLUSH: u64 = 1 << 0;
/// The write carried `REQ_FUA`.
pub const FUA: u64 = 1 << 1;
/// A discard.
pub const DISCARD: u64 = 1 << 2;
/// A mark (`dmsetup message <dev> 0 mark <text>`).
pub const MARK: u64 = 1 << 3;
/// The write carried `REQ_META`.
pub const METADATA: u64 = 1 << 4;

/// Size of the entry fields at the start of an entry block.
const ENTRY_FIELDS: usize = 32;

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Byte offset on the logged device.
    pub offset: u64,
    /// Length in bytes on the logged device (0 for a flush or a mark).
    pub len: u64,
    /// `FLUSH`, `FUA`, `DISCARD`, `MARK`, `METADATA` bits.
    pub flags: u64,
    /// The text of a mark.
    pub mark: Option<String>,
    /// The data written (empty for a discard, a flush or a mark).
    pub data: Vec<u8>,
}

impl Entry {
    /// Whether the entry is a flush or a FUA write: a point where the
    /// logged device promised durability.
    pub fn is_durability_point(&self) -> bool {
        self.flags & (FLUSH | FUA) != 0
    }

    /// Whether the entry writes data.
    pub fn is_write(&self) -> bool {
        self.flags & (MARK | DISCARD) == 0 && self.len > 0
    }

    /// A short description of the flags, for messages.
    pub fn flag_names(&self) -> String {
        let names = [
            (FLUSH, "flush"),
            (FUA, "fua"),
            (DISCARD, "discard"),
            (MARK, "mark"),
            (METADATA, "meta"),
        ];
        let v: Vec<&str> = names
            .iter()
            .filter(|(b, _)| self.flags & b != 0)
            .map(|(_, n)| *n)
            .collect();
        if v.is_empty() {
            "write".to_string()
        } else {
            v.join("+")
        }
    }
}

/// A parsed log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    /// Logical block size of the logged device.
    pub sectorsize: u32,
    /// The entries, in log order.
    pub entries: Vec<Entry>,
}

/// Why a log cannot be read.
#[derive(Debug)]
pub enum LogError {
    /// Reading failed.
    Io(io::Error),
    /// The super block is not that of a dm-log-writes log.
    BadSuper(String),
    /// An entry is malformed.
    BadEntry {
        /// Its index.
        index: u64,
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "reading the log: {e}"),
            Self::BadSuper(w) => write!(f, "not a dm-log-writes log: {w}"),
            Self::BadEntry { index, what } => write!(f, "log entry {index}: {what}"),
        }
    }
}

impl std::error::Error for LogError {}

impl From<io::Error> for LogError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

impl Log {
    /// Parses a log from its start.
    ///
    /// # Errors
    ///
    /// [`LogError`] if the log cannot be read or is malformed.
    pub fn parse<R: Read>(mut r: R) -> Result<Self, LogError> {
        let mut sup = [0u8; 512];
        r.read_exact(&mut sup)?;
        if le64(&sup, 0) != LOG_MAGIC {
            return Err(LogError::BadSuper(format!("magic {:#x}", le64(&sup, 0))));
        }
        if le64(&sup, 8) != LOG_VERSION {
            return Err(LogError::BadSuper(format!("version {}", le64(&sup, 8))));
        }
        let nr_entries = le64(&sup, 16);
        let sectorsize = u32::from_le_bytes([sup[24], sup[25], sup[26], sup[27]]);
        if !(512..=65536).contains(&sectorsize) || !sectorsize.is_power_of_two() {
            return Err(LogError::BadSuper(format!("sectorsize {sectorsize}")));
        }
        let ss = sectorsize as usize;
        // The rest of the super block.
        io::copy(&mut (&mut r).take((ss - 512) as u64), &mut io::sink())?;
        let mut entries = Vec::new();
        let mut block = vec![0u8; ss];
        for index in 0..nr_entries {
            r.read_exact(&mut block).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    LogError::BadEntry {
                        index,
                        what: "the log device ends inside it".into(),
                    }
                } else {
                    LogError::Io(e)
                }
            })?;
            let sector = le64(&block, 0);
            let nr_sectors = le64(&block, 8);
            let flags = le64(&block, 16);
            let data_len = le64(&block, 24);
            let bad = |what: String| LogError::BadEntry { index, what };
            let offset = sector
                .checked_mul(u64::from(sectorsize))
                .ok_or_else(|| bad(format!("sector {sector}")))?;
            let len = nr_sectors
                .checked_mul(u64::from(sectorsize))
                .filter(|&l| l <= 1 << 30)
                .ok_or_else(|| bad(format!("nr_sectors {nr_sectors}")))?;
            let mut entry = Entry {
                offset,
                len,
                flags,
                mark: None,
                data: Vec::new(),
            };
            if flags & MARK != 0 {
                let n = usize::try_from(data_len)
                    .ok()
                    .filter(|&n| n <= ss - ENTRY_FIELDS);
                let n = n.ok_or_else(|| bad(format!("mark of {data_len} bytes")))?;
                let text = &block[ENTRY_FIELDS..ENTRY_FIELDS + n];
                entry.mark = Some(String::from_utf8_lossy(text).into_owned());
                entry.len = 0;
            } else if flags & DISCARD == 0 && len > 0 {
                let mut data = vec![0u8; len as usize];
                r.read_exact(&mut data).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        bad("the log device ends inside its data".into())
                    } else {
                        LogError::Io(e)
                    }
                })?;
                entry.data = data;
            }
            entries.push(entry);
        }
        Ok(Self {
            sectorsize,
            entries,
        })
    }

    /// Index of the first mark with this text.
    pub fn find_mark(&self, text: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.mark.as_deref() == Some(text))
    }
}

/// Builds logs in the dm-log-writes format, for tests.
#[derive(Clone, Debug)]
pub struct LogBuilder {
    sectorsize: u32,
    nr: u64,
    body: Vec<u8>,
}

impl LogBuilder {
    /// An empty log of a device with this logical block size.
    pub fn new(sectorsize: u32) -> Self {
        Self {
            sectorsize,
            nr: 0,
            body: Vec::new(),
        }
    }

    fn entry(&mut self, sector: u64, nr_sectors: u64, flags: u64, mark: &[u8], data: &[u8]) {
        let ss = self.sectorsize as usize;
        let mut block = vec![0u8; ss];
        block[0..8].copy_from_slice(&sector.to_le_bytes());
        block[8..16].copy_from_slice(&nr_sectors.to_le_bytes());
        block[16..24].copy_from_slice(&flags.to_le_bytes());
        block[24..32].copy_from_slice(&(mark.len() as u64).to_le_bytes());
        block[32..32 + mark.len()].copy_from_slice(mark);
        self.body.extend_from_slice(&block);
        self.body.extend_from_slice(data);
        self.nr += 1;
    }

    /// A write of `data` (whole blocks) at byte `offset`.
    pub fn write(&mut self, offset: u64, flags: u64, data: &[u8]) -> &mut Self {
        let ss = u64::from(self.sectorsize);
        self.entry(offset / ss, data.len() as u64 / ss, flags, b"", data);
        self
    }

    /// An empty flush.
    pub fn flush(&mut self) -> &mut Self {
        self.entry(0, 0, FLUSH, b"", b"");
        self
    }

    /// A discard of `len` bytes at `offset`.
    pub fn discard(&mut self, offset: u64, len: u64) -> &mut Self {
        let ss = u64::from(self.sectorsize);
        self.entry(offset / ss, len / ss, DISCARD, b"", b"");
        self
    }

    /// A mark.
    pub fn mark(&mut self, text: &str) -> &mut Self {
        self.entry(0, 0, MARK, text.as_bytes(), b"");
        self
    }

    /// The log device's contents.
    pub fn build(&self) -> Vec<u8> {
        let ss = self.sectorsize as usize;
        let mut out = vec![0u8; ss];
        out[0..8].copy_from_slice(&LOG_MAGIC.to_le_bytes());
        out[8..16].copy_from_slice(&LOG_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.nr.to_le_bytes());
        out[24..28].copy_from_slice(&self.sectorsize.to_le_bytes());
        out.extend_from_slice(&self.body);
        // Unused log space after the last entry.
        out.extend_from_slice(&vec![0u8; ss * 4]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_writes_flushes_marks_and_discards() {
        let data: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
        let log = LogBuilder::new(512)
            .write(4096, 0, &data)
            .flush()
            .mark("setup-done")
            .write(512, FLUSH | FUA, &data[..512])
            .discard(8192, 4096)
            .build();
        let l = Log::parse(&log[..]).unwrap();
        assert_eq!(l.sectorsize, 512);
        assert_eq!(l.entries.len(), 5);
        let e = &l.entries[0];
        assert_eq!((e.offset, e.len, e.flags), (4096, 1024, 0));
        assert_eq!(e.data, data);
        assert!(e.is_write() && !e.is_durability_point());
        assert!(l.entries[1].is_durability_point() && !l.entries[1].is_write());
        assert_eq!(l.entries[2].mark.as_deref(), Some("setup-done"));
        assert_eq!(l.find_mark("setup-done"), Some(2));
        assert_eq!(l.entries[3].flag_names(), "flush+fua");
        assert_eq!((l.entries[4].offset, l.entries[4].len), (8192, 4096));
        assert!(l.entries[4].data.is_empty());
    }

    #[test]
    fn sector_numbers_count_blocks_of_the_sectorsize() {
        let data = vec![9u8; 8192];
        let log = LogBuilder::new(4096)
            .write(3 * 4096, FUA, &data)
            .mark("m")
            .build();
        let l = Log::parse(&log[..]).unwrap();
        assert_eq!(l.sectorsize, 4096);
        assert_eq!((l.entries[0].offset, l.entries[0].len), (12288, 8192));
        assert_eq!(l.entries[1].mark.as_deref(), Some("m"));
    }

    #[test]
    fn refuses_what_is_not_a_log() {
        assert!(matches!(
            Log::parse(&[0u8; 4096][..]),
            Err(LogError::BadSuper(_))
        ));
        let mut log = LogBuilder::new(512).build();
        log[24] = 3;
        assert!(matches!(Log::parse(&log[..]), Err(LogError::BadSuper(_))));
    }

    #[test]
    fn a_log_cut_short_is_an_error_naming_the_entry() {
        let mut b = LogBuilder::new(512);
        b.mark("a").write(0, 0, &[1u8; 2048]);
        let log = b.build();
        let cut = &log[..512 * 3];
        match Log::parse(cut) {
            Err(LogError::BadEntry { index, .. }) => assert_eq!(index, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_mark_longer_than_its_block_is_refused() {
        let mut log = LogBuilder::new(512).mark("x").build();
        log[512 + 24..512 + 32].copy_from_slice(&600u64.to_le_bytes());
        assert!(matches!(
            Log::parse(&log[..]),
            Err(LogError::BadEntry { index: 0, .. })
        ));
    }
}
