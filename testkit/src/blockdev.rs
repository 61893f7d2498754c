// SPDX-License-Identifier: GPL-2.0-only

//! Aligned buffers and `O_DIRECT` I/O on block devices: the devices under
//! test are dm devices whose page cache the snapshot never sees, so every
//! read and write here bypasses it.

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Seek;
use std::io::SeekFrom;
use std::ops::Deref;
use std::ops::DerefMut;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Alignment of [`AlignedBuf`]: enough for 4 KiB logical blocks.
pub const ALIGN: usize = 4096;

/// A zeroed byte buffer aligned to [`ALIGN`], for `O_DIRECT`: the aligned
/// part of a vector one alignment longer (its heap block does not move
/// with it).
pub struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Self {
        let mem = vec![0u8; len + ALIGN];
        // Always below ALIGN for a byte pointer.
        let start = mem.as_ptr().align_offset(ALIGN).min(ALIGN);
        Self { mem, start, len }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }
}

/// Opens a device for `O_DIRECT` reads, or reads and writes.
///
/// # Errors
///
/// The open error.
pub fn open_direct(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Size of a device or file in bytes.
///
/// # Errors
///
/// The seek error.
pub fn size(f: &File) -> io::Result<u64> {
    let mut f = f;
    f.seek(SeekFrom::End(0))
}

/// Reads `len` bytes from `offset` (both aligned) in pieces of at most 1 MiB.
///
/// # Errors
///
/// The read error.
pub fn read_all(f: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut buf = AlignedBuf::new(len.min(1 << 20));
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len());
        f.read_exact_at(&mut buf[..n], offset + done as u64)?;
        out.extend_from_slice(&buf[..n]);
        done += n;
    }
    Ok(out)
}

/// Writes `data` at `offset` (both aligned) in pieces of at most 1 MiB.
///
/// # Errors
///
/// The write error.
pub fn write_all(f: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    let mut buf = AlignedBuf::new(data.len().clamp(1, 1 << 20));
    let mut done = 0;
    while done < data.len() {
        let n = (data.len() - done).min(buf.len());
        buf[..n].copy_from_slice(&data[done..done + n]);
        f.write_all_at(&buf[..n], offset + done as u64)?;
        done += n;
    }
    Ok(())
}

/// Writes the `block`-sized pieces of `new` that differ from `old` (same
/// length), merging runs of changed blocks into one write each. Returns the
/// bytes written.
///
/// # Errors
///
/// The write error.
pub fn write_changed(f: &File, old: &[u8], new: &[u8], block: usize) -> io::Result<u64> {
    let mut written = 0u64;
    let mut run: Option<usize> = None;
    let n = new.len() / block;
    for b in 0..=n {
        let changed =
            b < n && old.get(b * block..(b + 1) * block) != new.get(b * block..(b + 1) * block);
        match (changed, run) {
            (true, None) => run = Some(b),
            (false, Some(s)) => {
                write_all(f, (s * block) as u64, &new[s * block..b * block])?;
                written += ((b - s) * block) as u64;
                run = None;
            }
            _ => {}
        }
    }
    Ok(written)
}

/// Sequential `O_DIRECT` reads of a device through an aligned buffer.
pub struct DirectReader {
    file: File,
    buf: AlignedBuf,
    /// Device offset of `buf[0]`.
    base: u64,
    /// Valid bytes in `buf`.
    filled: usize,
    /// Read position in `buf`.
    pos: usize,
}

impl DirectReader {
    /// Reads `file` from its start, `chunk` bytes (aligned) at a time.
    pub fn new(file: File, chunk: usize) -> Self {
        Self {
            file,
            buf: AlignedBuf::new(chunk),
            base: 0,
            filled: 0,
            pos: 0,
        }
    }
}

impl io::Read for DirectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.filled {
            self.base += self.filled as u64;
            self.pos = 0;
            self.filled = 0;
            let n = self.file.read_at(&mut self.buf, self.base)?;
            self.filled = n;
            if n == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.filled - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned_and_zeroed() {
        let b = AlignedBuf::new(10000);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert_eq!(b.len(), 10000);
        assert!(b.iter().all(|&x| x == 0));
    }

    #[test]
    fn write_changed_writes_only_the_changed_runs() {
        let dir = std::env::temp_dir().join(format!("snap-crash-{}", std::process::id()));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&dir)
            .unwrap();
        let old = vec![0u8; 8 * 512];
        let mut new = old.clone();
        new[512] = 1;
        new[1024] = 2;
        new[7 * 512 + 3] = 3;
        f.write_all_at(&old, 0).unwrap();
        assert_eq!(write_changed(&f, &old, &new, 512).unwrap(), 3 * 512);
        let mut back = vec![0u8; new.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, new);
        std::fs::remove_file(&dir).unwrap();
    }
}
