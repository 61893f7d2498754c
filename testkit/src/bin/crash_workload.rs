// SPDX-License-Identifier: GPL-2.0-only

//! The writes of the crash-replay test and the helpers of the guest tests
//! ([`snap_testkit::workload`], where the commands are described).
//!
//! ```text
//! crash_workload fill DEV [BYTES] | garbage COW CHUNK_SECTORS RECORDS |
//!     write LOGDEV ORIGIN|- SNAPSHOT|- COUNT QD SEED FIRST_ID RANGE |
//!     mark LOGDEV TEXT | permutation-dump N PER_AREA MUL COW_SECTORS |
//!     random-dump N PER_AREA COW_SECTORS | dm COMMAND ...
//! ```

#![forbid(unsafe_code)]

use std::io;
use std::path::Path;
use std::process::ExitCode;

use snap_testkit::workload;
use snap_testkit::workload::usage;
use snap_testkit::workload::WriteJob;

fn num(s: Option<&String>) -> io::Result<u64> {
    s.and_then(|s| s.parse().ok()).ok_or_else(usage)
}

fn run(args: &[String]) -> io::Result<()> {
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or_else(usage);
    match args.first().map(String::as_str) {
        Some("dm") => workload::dm(&args[1..]),
        Some("fill") => workload::fill(
            Path::new(arg(1)?),
            args.get(2).map(|s| num(Some(s))).transpose()?,
        ),
        Some("garbage") => {
            workload::garbage(Path::new(arg(1)?), num(args.get(2))?, num(args.get(3))?)
        }
        Some("mark") => workload::mark(arg(1)?, arg(2)?),
        Some("permutation-dump") => workload::permutation_dump(
            num(args.get(1))?,
            num(args.get(2))?,
            num(args.get(3))?,
            num(args.get(4))?,
        ),
        Some("random-dump") => {
            workload::random_dump(num(args.get(1))?, num(args.get(2))?, num(args.get(3))?)
        }
        Some("write") => {
            let job = WriteJob::new(
                arg(1)?,
                Some(arg(2)?),
                Some(arg(3)?),
                num(args.get(4))?,
                num(args.get(6))?,
                num(args.get(7))?,
                num(args.get(8))?,
            )?;
            workload::write(&job, num(args.get(5))?)
        }
        _ => Err(usage()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash_workload: {e}");
            ExitCode::from(2)
        }
    }
}
