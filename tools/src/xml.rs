// SPDX-License-Identifier: GPL-2.0-only

//! The dump format, version 1: a small XML document, written and read one
//! element at a time so that neither side holds more than one element in
//! memory.
//!
//! ```xml
//! <snap_store dump_version="1" disk_version="1" valid="1" chunk_size="8" cow_sectors="16384">
//!   <exception old_chunk="100" new_chunk="2"/>
//!   <exception old_chunk="7" new_chunk="3"/>
//! </snap_store>
//! ```
//!
//! - `snap_store`, the root, carries the header: `dump_version` (1),
//!   `disk_version` (the header's `version`, 1), `valid` (the header's
//!   `valid` field, as stored), `chunk_size` (sectors) and `cow_sectors`
//!   (the size of the COW device in 512-byte sectors).
//! - One `exception` element per exception, in on-disk order: exception
//!   `i` is record `i % exceptions_per_area` of metadata area
//!   `i / exceptions_per_area`, with `exceptions_per_area = chunk_size *
//!   512 / 16`. An invalid store (`valid="0"`) has none.
//! - Numbers are unsigned decimal. All attributes are required and no
//!   other is allowed. The writer puts one element per line and the
//!   attributes in the order shown; the reader also accepts any whitespace
//!   between elements and attributes, single quotes, an `<?xml ...?>`
//!   declaration and comments.

use std::fmt;
use std::io;
use std::io::BufRead;
use std::io::Write;

use snap_format::Exception;

/// Version of the dump format this crate writes and reads.
pub const DUMP_VERSION: u32 = 1;

/// Name of the root element.
pub const ROOT: &str = "snap_store";

/// Name of an exception element.
pub const EXCEPTION: &str = "exception";

/// The header of a dump: the on-disk header fields and the COW size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DumpHeader {
    /// The header's `version`. C: `disk_header.version`.
    pub disk_version: u32,
    /// The header's `valid` field, as stored. C: `disk_header.valid`.
    pub valid: u32,
    /// Chunk size in sectors. C: `disk_header.chunk_size`.
    pub chunk_size: u32,
    /// Size of the COW device in sectors.
    pub cow_sectors: u64,
}

/// Writes the opening root element.
///
/// # Errors
///
/// The writer's error.
pub fn write_header<W: Write>(w: &mut W, h: &DumpHeader) -> io::Result<()> {
    writeln!(
        w,
        "<{ROOT} dump_version=\"{DUMP_VERSION}\" disk_version=\"{}\" valid=\"{}\" chunk_size=\"{}\" cow_sectors=\"{}\">",
        h.disk_version, h.valid, h.chunk_size, h.cow_sectors
    )
}

/// Writes one exception element.
///
/// # Errors
///
/// The writer's error.
pub fn write_exception<W: Write>(w: &mut W, e: Exception) -> io::Result<()> {
    writeln!(
        w,
        "  <{EXCEPTION} old_chunk=\"{}\" new_chunk=\"{}\"/>",
        e.old_chunk, e.new_chunk
    )
}

/// Writes the closing root element.
///
/// # Errors
///
/// The writer's error.
pub fn write_footer<W: Write>(w: &mut W) -> io::Result<()> {
    writeln!(w, "</{ROOT}>")
}

/// A dump that cannot be read.
#[derive(Debug)]
pub enum ParseError {
    /// Reading the input failed.
    Io(io::Error),
    /// The text is not a dump of this version.
    Syntax {
        /// Line (from 1) of the element at fault.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "reading the dump failed: {e}"),
            Self::Syntax { line, message } => write!(f, "line {line}: {message}"),
        }
    }
}

impl std::error::Error for ParseError {}

impl From<io::Error> for ParseError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Most attributes an element of this format may carry.
const MAX_ATTRS: usize = 8;

/// One element tag, borrowing from the reader's buffer.
struct Tag<'a> {
    kind: TagKind,
    name: &'a [u8],
    attrs: [(&'a [u8], &'a [u8]); MAX_ATTRS],
    nr_attrs: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TagKind {
    /// `<name ...>`
    Start,
    /// `<name .../>`
    Empty,
    /// `</name>`
    End,
}

impl<'a> Tag<'a> {
    fn attrs(&self) -> &[(&'a [u8], &'a [u8])] {
        self.attrs.get(..self.nr_attrs).unwrap_or(&[])
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Start,
    InStore,
    Done,
}

/// Reads a dump one element at a time.
#[derive(Debug)]
pub struct DumpReader<R> {
    input: R,
    buf: Vec<u8>,
    /// Line of `buf[counted]`.
    buf_line: u64,
    /// Bytes at the start of `buf` whose newlines are counted in
    /// `buf_line`.
    counted: usize,
    /// Line of the last tag returned.
    tag_line: u64,
    state: State,
}

fn syntax(line: u64, message: impl Into<String>) -> ParseError {
    ParseError::Syntax {
        line,
        message: message.into(),
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn newlines(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .filter(|b| **b == b'\n')
        .fold(0u64, |n, _| n.saturating_add(1))
}

/// The most bytes of a value an error message quotes.
const SHOW_MAX: usize = 40;

/// `bytes` as text for an error message, cut after [`SHOW_MAX`] bytes
/// (with the full length said) so that a huge value cannot flood the
/// terminal.
fn show(bytes: &[u8]) -> String {
    match bytes.get(..SHOW_MAX) {
        Some(head) if bytes.len() > SHOW_MAX => format!(
            "{}... ({} bytes)",
            String::from_utf8_lossy(head),
            bytes.len()
        ),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
}

/// Parses the decimal digits at the start of `s`; `None` if there are
/// none or the number does not fit 64 bits.
///
/// Eight bytes at a time while eight are there (the restore's fast path
/// reads tens of millions of numbers), then one at a time.
fn leading_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    const POW10: [u64; 9] = [
        1,
        10,
        100,
        1_000,
        10_000,
        100_000,
        1_000_000,
        10_000_000,
        100_000_000,
    ];
    let mut value = 0u64;
    let mut len = 0usize;
    let mut rest = s;
    while let Some((head, tail)) = rest.split_first_chunk::<8>() {
        let (n, v) = eight_digits(u64::from_le_bytes(*head));
        value = value.checked_mul(*POW10.get(n)?)?.checked_add(v)?;
        len = len.saturating_add(n);
        if n < 8 {
            return (len > 0).then_some((value, s.get(len..)?));
        }
        rest = tail;
    }
    for &b in rest {
        if !b.is_ascii_digit() {
            break;
        }
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(b.wrapping_sub(b'0')))?;
        len = len.saturating_add(1);
    }
    (len > 0).then_some((value, s.get(len..)?))
}

/// The number of ASCII digits at the start of the eight bytes of `chunk`
/// (loaded little-endian: the first byte is the lowest) and their value.
fn eight_digits(chunk: u64) -> (usize, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Each byte XOR '0': a digit is now 0..=9, with a zero high nibble.
    let y = chunk ^ (ONES * 0x30);
    // Low nibble plus 6 carries into bit 4 exactly when it is above 9; it
    // cannot carry out of its byte.
    let above_nine = ((y & (ONES * 0x0f)) + ONES * 0x06) & (ONES * 0x10);
    let not_digit = (y & (ONES * 0xf0)) | above_nine;
    let n = (not_digit.trailing_zeros() / 8) as usize;
    if n == 0 {
        return (0, 0);
    }
    // The digits' values, moved to the top bytes: the bytes below become
    // leading zeros. A borrow of the subtraction only runs upwards, into
    // the bytes shifted out.
    let v = chunk.wrapping_sub(ONES * 0x30) << (8 * (8 - n));
    let v = (v.wrapping_mul(10).wrapping_add(v >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v.wrapping_mul(100).wrapping_add(v >> 16)) & 0x0000_ffff_0000_ffff;
    let v = (v.wrapping_mul(10_000).wrapping_add(v >> 32)) & 0xffff_ffff;
    (n, v)
}

/// The exception in `tag` if it is written exactly as
/// [`write_exception`] writes it: the fast path of a restore, which reads
/// millions of them. Anything else goes to the general parser.
fn canonical_exception(tag: &[u8]) -> Option<Exception> {
    match canonical_prefix(tag)? {
        (e, len) if len == tag.len() => Some(e),
        _ => None,
    }
}

/// The exception element written as [`write_exception`] writes it at the
/// start of `bytes`, and its length in bytes.
fn canonical_prefix(bytes: &[u8]) -> Option<(Exception, usize)> {
    const OPEN: &[u8] = b"<exception old_chunk=\"";
    const MIDDLE: &[u8] = b"\" new_chunk=\"";
    const CLOSE: &[u8] = b"\"/>";
    let rest = bytes.strip_prefix(OPEN)?;
    let (old_chunk, rest) = leading_u64(rest)?;
    let rest = rest.strip_prefix(MIDDLE)?;
    let (new_chunk, rest) = leading_u64(rest)?;
    rest.strip_prefix(CLOSE)?;
    let len = bytes
        .len()
        .checked_sub(rest.len())?
        .checked_add(CLOSE.len())?;
    Some((
        Exception {
            old_chunk,
            new_chunk,
        },
        len,
    ))
}

/// Parses the tag that starts at `lt` in `buf` and ends with its last byte.
fn tag_at(buf: &[u8], lt: usize, line: u64) -> Result<Tag<'_>, ParseError> {
    let end = buf.len().saturating_sub(1);
    let inner = buf
        .get(lt.saturating_add(1)..end)
        .ok_or_else(|| syntax(line, "malformed element"))?;
    parse_tag(inner, line)
}

/// Parses the inside of a tag, without `<` and `>`.
fn parse_tag(inner: &[u8], line: u64) -> Result<Tag<'_>, ParseError> {
    let (kind, body) = if let Some(rest) = inner.strip_prefix(b"/") {
        (TagKind::End, rest)
    } else if let Some(rest) = inner.strip_suffix(b"/") {
        (TagKind::Empty, rest)
    } else {
        (TagKind::Start, inner)
    };
    let name_len = body.iter().take_while(|b| is_name_byte(**b)).count();
    let (name, mut rest) = body.split_at(name_len);
    if name.is_empty() {
        return Err(syntax(line, format!("malformed element <{}>", show(inner))));
    }
    let mut tag = Tag {
        kind,
        name,
        attrs: [(&[][..], &[][..]); MAX_ATTRS],
        nr_attrs: 0,
    };
    loop {
        let spaces = rest.iter().take_while(|b| is_space(**b)).count();
        rest = rest.get(spaces..).unwrap_or(&[]);
        if rest.is_empty() {
            break;
        }
        if spaces == 0 || kind == TagKind::End {
            return Err(syntax(line, format!("malformed element <{}>", show(inner))));
        }
        let n = rest.iter().take_while(|b| is_name_byte(**b)).count();
        let (attr, after) = rest.split_at(n);
        let after = after.trim_ascii_start();
        let after = after
            .strip_prefix(b"=")
            .map(<[u8]>::trim_ascii_start)
            .filter(|_| !attr.is_empty())
            .ok_or_else(|| syntax(line, format!("malformed attribute in <{}>", show(inner))))?;
        let (&quote, after) = after
            .split_first()
            .filter(|(q, _)| **q == b'"' || **q == b'\'')
            .ok_or_else(|| {
                syntax(
                    line,
                    format!("unquoted attribute value in <{}>", show(inner)),
                )
            })?;
        let end = after.iter().position(|b| *b == quote).ok_or_else(|| {
            syntax(
                line,
                format!("unterminated attribute value in <{}>", show(inner)),
            )
        })?;
        let (value, after) = after.split_at(end);
        rest = after.get(1..).unwrap_or(&[]);
        if tag.attrs().iter().any(|(a, _)| *a == attr) {
            return Err(syntax(
                line,
                format!("attribute {} given twice", show(attr)),
            ));
        }
        let slot = tag
            .attrs
            .get_mut(tag.nr_attrs)
            .ok_or_else(|| syntax(line, format!("too many attributes in <{}>", show(name))))?;
        *slot = (attr, value);
        tag.nr_attrs = tag.nr_attrs.saturating_add(1);
    }
    Ok(tag)
}

fn parse_u64(value: &[u8], attr: &str, line: u64) -> Result<u64, ParseError> {
    let bad = || {
        syntax(
            line,
            format!(
                "{attr}=\"{}\" is not an unsigned decimal number of 64 bits",
                show(value)
            ),
        )
    };
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(bad)
}

fn parse_u32(value: &[u8], attr: &str, line: u64) -> Result<u32, ParseError> {
    let v = parse_u64(value, attr, line)?;
    u32::try_from(v).map_err(|_| syntax(line, format!("{attr}=\"{v}\" does not fit 32 bits")))
}

/// Takes the values of exactly the attributes `names` from `tag`.
fn take_attrs<'a, const N: usize>(
    tag: &Tag<'a>,
    names: [&str; N],
    line: u64,
) -> Result<[&'a [u8]; N], ParseError> {
    let mut out: [Option<&'a [u8]>; N] = [None; N];
    for (attr, value) in tag.attrs() {
        let slot = names
            .iter()
            .position(|n| n.as_bytes() == *attr)
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| {
                syntax(
                    line,
                    format!("unknown attribute {} of <{}>", show(attr), show(tag.name)),
                )
            })?;
        *slot = Some(*value);
    }
    let mut values: [&'a [u8]; N] = [&[]; N];
    for ((v, o), n) in values.iter_mut().zip(out).zip(names) {
        *v = o.ok_or_else(|| syntax(line, format!("<{}> lacks attribute {n}", show(tag.name))))?;
    }
    Ok(values)
}

impl<R: BufRead> DumpReader<R> {
    /// A reader of the dump in `input`.
    pub fn new(input: R) -> Self {
        Self {
            input,
            buf: Vec::new(),
            buf_line: 1,
            counted: 0,
            tag_line: 1,
            state: State::Start,
        }
    }

    /// Line (from 1) of the element read last.
    pub fn line(&self) -> u64 {
        self.tag_line
    }

    /// Reads up to the next element tag into `self.buf`, skipping the
    /// declaration and comments. Returns the offset of its `<`, or `None`
    /// at the end of the input.
    fn next_raw_tag(&mut self) -> Result<Option<usize>, ParseError> {
        loop {
            let rest = self.buf.get(self.counted..).unwrap_or(&[]);
            self.buf_line = self.buf_line.saturating_add(newlines(rest));
            self.buf.clear();
            self.counted = 0;
            let n = self.input.read_until(b'>', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            let Some(lt) = self.buf.iter().position(|b| *b == b'<') else {
                if self.buf.iter().all(|b| is_space(*b)) {
                    // Trailing whitespace: the input ended.
                    self.buf_line = self.buf_line.saturating_add(newlines(&self.buf));
                    self.buf.clear();
                    self.counted = 0;
                    return Ok(None);
                }
                return Err(syntax(self.buf_line, "text outside an element"));
            };
            let (before, tag) = self.buf.split_at(lt);
            if !before.iter().all(|b| is_space(*b)) {
                return Err(syntax(self.buf_line, "text outside an element"));
            }
            self.buf_line = self.buf_line.saturating_add(newlines(before));
            self.tag_line = self.buf_line;
            self.counted = lt;
            if tag.starts_with(b"<!--") {
                while !self.buf.ends_with(b"-->") {
                    if self.input.read_until(b'>', &mut self.buf)? == 0 {
                        return Err(syntax(self.tag_line, "unterminated comment"));
                    }
                }
                continue;
            }
            if !tag.ends_with(b">") {
                return Err(syntax(self.tag_line, "input ends inside an element"));
            }
            if tag.starts_with(b"<?") {
                if self.state != State::Start || !tag.ends_with(b"?>") {
                    return Err(syntax(self.tag_line, "misplaced or malformed <?...?>"));
                }
                continue;
            }
            return Ok(Some(lt));
        }
    }

    /// Reads the root element.
    ///
    /// # Errors
    ///
    /// [`ParseError`] if the input does not start with a `snap_store`
    /// element of dump version 1.
    pub fn read_header(&mut self) -> Result<DumpHeader, ParseError> {
        if self.state != State::Start {
            return Err(syntax(self.tag_line, "the header was read already"));
        }
        let Some(lt) = self.next_raw_tag()? else {
            return Err(syntax(self.buf_line, format!("no <{ROOT}> element")));
        };
        let line = self.tag_line;
        let tag = tag_at(&self.buf, lt, line)?;
        if tag.name != ROOT.as_bytes() || tag.kind == TagKind::End {
            return Err(syntax(
                line,
                format!("expected <{ROOT}>, found <{}>", show(tag.name)),
            ));
        }
        let [dv, disk, valid, chunk, cow] = take_attrs(
            &tag,
            [
                "dump_version",
                "disk_version",
                "valid",
                "chunk_size",
                "cow_sectors",
            ],
            line,
        )?;
        let dump_version = parse_u32(dv, "dump_version", line)?;
        if dump_version != DUMP_VERSION {
            return Err(syntax(
                line,
                format!(
                    "dump version {dump_version} is not supported (this tool reads version {DUMP_VERSION})"
                ),
            ));
        }
        let header = DumpHeader {
            disk_version: parse_u32(disk, "disk_version", line)?,
            valid: parse_u32(valid, "valid", line)?,
            chunk_size: parse_u32(chunk, "chunk_size", line)?,
            cow_sectors: parse_u64(cow, "cow_sectors", line)?,
        };
        self.state = if tag.kind == TagKind::Empty {
            self.expect_end()?;
            State::Done
        } else {
            State::InStore
        };
        Ok(header)
    }

    /// Reads the next exception; `None` after the closing root element.
    ///
    /// # Errors
    ///
    /// [`ParseError`] for anything but an `exception` element or the end of
    /// the root, for text after the root, or if the input ends first.
    pub fn next_exception(&mut self) -> Result<Option<Exception>, ParseError> {
        match self.state {
            State::Start => return Err(syntax(1, "the header must be read first")),
            State::Done => return Ok(None),
            State::InStore => {}
        }
        if let Some(e) = self.next_canonical_in_place()? {
            return Ok(Some(e));
        }
        let Some(lt) = self.next_raw_tag()? else {
            return Err(syntax(
                self.buf_line,
                format!("input ends before </{ROOT}>"),
            ));
        };
        if let Some(e) = self.buf.get(lt..).and_then(canonical_exception) {
            // No newline inside: the whole buffer is counted.
            self.counted = self.buf.len();
            return Ok(Some(e));
        }
        let line = self.tag_line;
        let tag = tag_at(&self.buf, lt, line)?;
        match tag.kind {
            TagKind::End if tag.name == ROOT.as_bytes() => {
                self.state = State::Done;
                self.expect_end()?;
                Ok(None)
            }
            TagKind::Empty if tag.name == EXCEPTION.as_bytes() => {
                let [old, new] = take_attrs(&tag, ["old_chunk", "new_chunk"], line)?;
                Ok(Some(Exception {
                    old_chunk: parse_u64(old, "old_chunk", line)?,
                    new_chunk: parse_u64(new, "new_chunk", line)?,
                }))
            }
            TagKind::Start if tag.name == EXCEPTION.as_bytes() => Err(syntax(
                line,
                format!("<{EXCEPTION}> must be an empty element (<{EXCEPTION} .../>)"),
            )),
            _ => Err(syntax(
                line,
                format!("unexpected element <{}> inside <{ROOT}>", show(tag.name)),
            )),
        }
    }

    /// The fast path of [`Self::next_exception`]: when the input's buffer
    /// holds white space and then a whole exception element written as
    /// [`write_exception`] writes it, takes it from there without copying.
    /// `None` (nothing consumed) for anything else, which the general path
    /// then reads.
    fn next_canonical_in_place(&mut self) -> Result<Option<Exception>, ParseError> {
        if self.counted != self.buf.len() {
            return Ok(None);
        }
        let avail = match self.input.fill_buf() {
            Ok(avail) => avail,
            // The general path retries it.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let ws = avail.iter().take_while(|b| is_space(**b)).count();
        let Some(rest) = avail.get(ws..) else {
            return Ok(None);
        };
        let Some((e, len)) = canonical_prefix(rest) else {
            return Ok(None);
        };
        let nl = avail.get(..ws).map_or(0, newlines);
        self.buf_line = self.buf_line.saturating_add(nl);
        self.tag_line = self.buf_line;
        self.buf.clear();
        self.counted = 0;
        self.input.consume(ws.saturating_add(len));
        Ok(Some(e))
    }

    /// Checks that only whitespace and comments follow the root.
    fn expect_end(&mut self) -> Result<(), ParseError> {
        match self.next_raw_tag()? {
            None => Ok(()),
            Some(_) => Err(syntax(self.tag_line, format!("element after </{ROOT}>"))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn leading_numbers_parse_as_std_does_at_every_length_and_alignment() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let r = next();
            let digits = 1 + (r % 24) as usize;
            let mut s: String = (0..digits)
                .map(|i| char::from(b'0' + ((r >> (i % 60)) as u8 ^ i as u8) % 10))
                .collect();
            let tail = ["", "\"", "\" new_chunk=\"1\"/>", "x", "/", ":", "\u{ff}"];
            s += tail[(next() % tail.len() as u64) as usize];
            let pad = (next() % 9) as usize;
            let padded = format!("{}{s}", "\"".repeat(pad));
            let want = s[..digits].parse::<u64>().ok();
            let got = leading_u64(&padded.as_bytes()[pad..]);
            assert_eq!(got.map(|(v, _)| v), want, "{s:?}");
            if let Some((_, rest)) = got {
                assert_eq!(rest, &s.as_bytes()[digits..], "{s:?}");
            }
        }
        assert_eq!(
            leading_u64(b"18446744073709551615\""),
            Some((u64::MAX, &b"\""[..]))
        );
        assert_eq!(leading_u64(b"18446744073709551616"), None);
        assert_eq!(
            leading_u64(b"00000000000000000000000000042x"),
            Some((42, &b"x"[..]))
        );
        assert_eq!(leading_u64(b"\"12345678"), None);
        assert_eq!(leading_u64(b""), None);
        // Bytes just outside '0'..='9' on either side.
        for b in [b'/', b':', 0x2f | 0x80, 0x3a | 0x80, 0xff, 0x00, 0xf9, 0xfa] {
            let mut s = b"1234567".to_vec();
            s.push(b);
            s.extend_from_slice(b"99999999");
            assert_eq!(leading_u64(&s), Some((1_234_567, &s[7..])), "{b:#x}");
        }
    }
}
