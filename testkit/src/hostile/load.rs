// SPDX-License-Identifier: GPL-2.0-only

//! The hostile-image loader behind `hostile_load`: loads hostile COW images
//! under the snapshot target and compares what the kernel does with the
//! format core's verdict on each.
//!
//! ```text
//! hostile_load CORPUS_DIR SCRATCH_DEV ORIGIN_DEV [--mutants N] [--seed S]
//! ```
//!
//! The images are every file of `CORPUS_DIR` (inputs of the `parse_cow`
//! fuzz target: a control byte that gives the table chunk size, then the
//! image) and `N` mutants (default 240) of valid stores
//! ([`super::mutants`]). Each is written at the start of `SCRATCH_DEV`
//! and a dm-linear slice of exactly its sectors, `hostile-cow`, becomes the
//! COW device of a snapshot `hostile-snap` of `ORIGIN_DEV` (`P`, the
//! image's table chunk size). The load must succeed exactly when the format
//! core accepts the image, the status must show what the core expects, and
//! the slice must read back unchanged after the snapshot is removed unless
//! the store had to write (a new store, records to clear after an end
//! marker).
//!
//! Then, for the first mutant of each kind that `snap_dump --repair` can
//! salvage, the store it and `snap_restore` write in place
//! ([`super::repaired`]) is loaded the same way: the kernel must load it
//! with the exceptions kept and nothing to clear.
//!
//! Prints one line per image and one `FAIL` line per violation, then
//! ([`Tally::report`]) `hostile: N images (C corpus, M mutants, R repaired
//! mutants of K kinds), A accepted, R refused, F failures`. Exit status of
//! `hostile_load`: 0 no failure, 1 failures, fewer than 200 mutants or
//! repaired mutants of too few kinds, 2 the run could not be done.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fs;
use std::fs::File;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::time::Instant;

use super::bases;
use super::corpus_image;
use super::expect;
use super::judge;
use super::mutants;
use super::Expected;
use super::Kernel;
use super::Observed;
use super::DEFAULT_MUTANTS;
use super::MIN_MUTANTS;
use super::MIN_REPAIRED_KINDS;
use super::SECTOR;
use crate::blockdev::open_direct;
use crate::blockdev::read_all;
use crate::blockdev::size;
use crate::blockdev::write_all;
use crate::dm::Control;
use crate::dm::Device;
use crate::dm::Target;

const COW: &str = "hostile-cow";
const SNAP: &str = "hostile-snap";

/// The command line of `hostile_load`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// The fuzz corpus directory.
    pub corpus: PathBuf,
    /// The device the images are written to.
    pub scratch: PathBuf,
    /// The snapshot's origin.
    pub origin: PathBuf,
    /// Mutants to make.
    pub mutants: usize,
    /// The seed of the mutants.
    pub seed: u64,
}

impl Args {
    /// Parses the arguments after the program name.
    ///
    /// # Errors
    ///
    /// The message for a bad command line.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut positional = Vec::new();
        let (mut mutants, mut seed) = (DEFAULT_MUTANTS, 1u64);
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--mutants" | "--seed" => {
                    let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
                    let n = v
                        .parse::<u64>()
                        .map_err(|_| format!("{a}: not a number: {v}"))?;
                    if a == "--seed" {
                        seed = n;
                    } else {
                        mutants = usize::try_from(n).map_err(|e| e.to_string())?;
                    }
                }
                _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
                _ => positional.push(PathBuf::from(a)),
            }
        }
        let [corpus, scratch, origin] = <[PathBuf; 3]>::try_from(positional).map_err(|_| {
            "usage: hostile_load CORPUS_DIR SCRATCH_DEV ORIGIN_DEV [--mutants N] [--seed S]"
                .to_string()
        })?;
        Ok(Self {
            corpus,
            scratch,
            origin,
            mutants,
            seed,
        })
    }
}

/// An image to load: its label, table chunk size and bytes, and for a
/// repaired mutant the number of exceptions the repair kept.
struct Image {
    label: String,
    table_chunk: u32,
    bytes: Vec<u8>,
    repaired: Option<u64>,
}

/// The images of the corpus directory `dir`, in the order of their names.
fn corpus(dir: &Path) -> io::Result<Vec<Image>> {
    let mut paths = Vec::new();
    for e in fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
    {
        let e = e?;
        if e.file_type()?.is_file() {
            paths.push(e.path());
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let name = p
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let input =
            fs::read(&p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        match corpus_image(&input) {
            Some((table_chunk, bytes)) => out.push(Image {
                label: format!("corpus {name}"),
                table_chunk,
                bytes,
                repaired: None,
            }),
            None => eprintln!("hostile: corpus {name}: empty, skipped"),
        }
    }
    if out.is_empty() {
        return Err(io::Error::other(format!(
            "no corpus image in {}",
            dir.display()
        )));
    }
    Ok(out)
}

/// The mutants, then the repaired mutants: the first mutant of each kind
/// that can be salvaged, repaired (the kernel must load the store the tools
/// write). Returns the images and the number of kinds repaired.
fn mutant_images(n: usize, seed: u64) -> io::Result<(Vec<Image>, Vec<Image>, usize)> {
    let bases = bases().map_err(|e| io::Error::other(format!("base images: {e}")))?;
    let mut images = Vec::new();
    let mut repaired = Vec::new();
    let mut kinds = BTreeSet::new();
    for (i, m) in mutants(&bases, n, seed).into_iter().enumerate() {
        if !kinds.contains(&m.kind) {
            if let Some((bytes, kept)) = super::repaired(&m.bytes)? {
                kinds.insert(m.kind);
                let chunk = bases
                    .iter()
                    .find(|b| b.name == m.base)
                    .map_or(0, |b| b.layout.chunk_sectors());
                repaired.push(Image {
                    label: format!("repaired mutant {i} ({m})"),
                    table_chunk: chunk,
                    bytes,
                    repaired: Some(kept),
                });
            }
        }
        images.push(Image {
            label: format!("mutant {i} ({m})"),
            table_chunk: m.table_chunk,
            bytes: m.bytes,
            repaired: None,
        });
    }
    Ok((images, repaired, kinds.len()))
}

/// The devices and the device-mapper client of a run.
struct Rig {
    ctl: Control,
    scratch: File,
    scratch_path: PathBuf,
    origin: PathBuf,
    origin_sectors: u64,
}

impl Rig {
    /// Opens the devices of `a`; the scratch device must hold `largest`
    /// bytes.
    fn open(a: &Args, largest: usize) -> io::Result<Self> {
        let scratch = open_direct(&a.scratch, true)?;
        if size(&scratch)? < largest as u64 {
            return Err(io::Error::other(format!(
                "{} is smaller than the largest image ({largest} bytes)",
                a.scratch.display()
            )));
        }
        Ok(Self {
            ctl: Control::open()?,
            scratch,
            scratch_path: a.scratch.clone(),
            origin: a.origin.clone(),
            origin_sectors: size(&File::open(&a.origin)?)? / SECTOR as u64,
        })
    }

    /// Loads `image` as the COW device of a snapshot and reports what the
    /// kernel did; the devices made are removed again.
    fn load(&self, image: &[u8], table_chunk: u32) -> io::Result<Observed> {
        if image.is_empty() || !image.len().is_multiple_of(SECTOR) {
            return Err(io::Error::other("an image of no or partial sectors"));
        }
        write_all(&self.scratch, 0, image)?;
        let cow = self.ctl.create(COW)?;
        let r = self.over_slice(&cow, image, table_chunk);
        let removed = self.ctl.remove(COW);
        let seen = r?;
        removed?;
        Ok(seen)
    }

    fn over_slice(&self, cow: &Device, image: &[u8], table_chunk: u32) -> io::Result<Observed> {
        let linear = format!("{} 0", self.scratch_path.display());
        let table = [Target {
            start: 0,
            len: (image.len() / SECTOR) as u64,
            kind: "linear",
            params: &linear,
        }];
        self.ctl.load(COW, &table)?;
        self.ctl.resume(COW)?;
        let before = read_all(&open_direct(&cow.node(), false)?, 0, image.len())?;
        if before != image {
            return Err(io::Error::other(
                "the COW slice does not read back the image",
            ));
        }
        let kernel = self.activate(cow, table_chunk)?;
        let after = read_all(&open_direct(&cow.node(), false)?, 0, image.len())?;
        Ok(Observed {
            kernel,
            written: after != before,
        })
    }

    fn activate(&self, cow: &Device, table_chunk: u32) -> io::Result<Kernel> {
        self.ctl.create(SNAP)?;
        let params = format!(
            "{} {} P {table_chunk}",
            self.origin.display(),
            cow.node().display()
        );
        let table = [Target {
            start: 0,
            len: self.origin_sectors,
            kind: "snapshot",
            params: &params,
        }];
        let kernel = match self.ctl.load(SNAP, &table) {
            Err(_) => Kernel::Refused(self.ctl.last_errno()),
            Ok(()) => Kernel::Accepted(
                match self.ctl.resume(SNAP).and_then(|()| self.ctl.status(SNAP)) {
                    Ok(status) => status,
                    Err(e) => format!("({e})"),
                },
            ),
        };
        self.ctl.remove(SNAP)?;
        Ok(kernel)
    }
}

/// What a run found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Corpus images loaded.
    pub corpus: usize,
    /// Mutants loaded.
    pub mutants: usize,
    /// Images the kernel accepted.
    pub accepted: usize,
    /// Images the kernel refused.
    pub refused: usize,
    /// Repaired mutants loaded.
    pub repaired: usize,
    /// Kinds of damage repaired.
    pub repaired_kinds: usize,
    /// Violations found.
    pub failures: usize,
}

impl Tally {
    /// Prints the closing lines; whether the run passed: no failure, enough
    /// mutants and repaired mutants of enough kinds.
    pub fn report(&self) -> bool {
        let t = self;
        println!(
            "hostile: {} images ({} corpus, {} mutants, {} repaired mutants of {} kinds), \
             {} accepted, {} refused, {} failures",
            t.corpus + t.mutants + t.repaired,
            t.corpus,
            t.mutants,
            t.repaired,
            t.repaired_kinds,
            t.accepted,
            t.refused,
            t.failures
        );
        if t.mutants < MIN_MUTANTS {
            println!("hostile: only {} mutants, {MIN_MUTANTS} wanted", t.mutants);
        }
        if t.repaired_kinds < MIN_REPAIRED_KINDS {
            println!(
                "hostile: repaired mutants of only {} kinds, {MIN_REPAIRED_KINDS} wanted",
                t.repaired_kinds
            );
        }
        t.failures == 0 && t.mutants >= MIN_MUTANTS && t.repaired_kinds >= MIN_REPAIRED_KINDS
    }
}

/// Loads every image of the run `a` asks for and checks each.
///
/// # Errors
///
/// The corpus cannot be read, the devices are too small, or an image cannot
/// be loaded (a failure of device-mapper or of the I/O, not a verdict).
pub fn run(a: &Args) -> io::Result<Tally> {
    let t0 = Instant::now();
    let mut images = corpus(&a.corpus)?;
    let (mutants, repaired, repaired_kinds) = mutant_images(a.mutants, a.seed)?;
    let mut t = Tally {
        corpus: images.len(),
        repaired_kinds,
        ..Tally::default()
    };
    images.extend(mutants);
    let mutant_end = images.len();
    images.extend(repaired);
    let largest = images.iter().map(|i| i.bytes.len()).max().unwrap_or(0);
    let rig = Rig::open(a, largest)?;
    for (i, img) in images.iter().enumerate() {
        t.mutants += usize::from(i >= t.corpus && i < mutant_end);
        check_image(&rig, img, &mut t)?;
    }
    eprintln!(
        "hostile: {:.1} s, {} busy removes retried",
        t0.elapsed().as_secs_f64(),
        rig.ctl.busy_retries()
    );
    Ok(t)
}

/// Loads one image, prints its line and any violation, and counts it.
fn check_image(rig: &Rig, img: &Image, t: &mut Tally) -> io::Result<()> {
    let expected = expect(&img.bytes, img.table_chunk)?;
    if let Some(kept) = img.repaired {
        t.repaired += 1;
        let clean = matches!(
            expected,
            Expected::Valid { exceptions, cleanup: false, .. } if exceptions == kept
        );
        if !clean {
            println!(
                "FAIL {}: the format core says {expected} of the store the repair wrote \
                 ({kept} exceptions kept)",
                img.label
            );
            t.failures += 1;
        }
    }
    let seen = match rig.load(&img.bytes, img.table_chunk) {
        Ok(seen) => seen,
        Err(e) => {
            // Leave no device behind: each may or may not exist.
            let _ = rig.ctl.remove(SNAP);
            let _ = rig.ctl.remove(COW);
            return Err(io::Error::new(e.kind(), format!("{}: {e}", img.label)));
        }
    };
    match seen.kernel {
        Kernel::Accepted(_) => t.accepted += 1,
        Kernel::Refused(_) => t.refused += 1,
    }
    println!(
        "{}, {} bytes: core {expected}; kernel {}{}",
        img.label,
        img.bytes.len(),
        seen.kernel,
        if seen.written { ", written" } else { "" }
    );
    for v in judge(&expected, &seen) {
        println!("FAIL {}: {v}", img.label);
        t.failures += 1;
    }
    Ok(())
}
