// SPDX-License-Identifier: GPL-2.0-only

//! Loads hostile COW images under the snapshot target and compares what the
//! kernel does with the format core's verdict on each
//! ([`snap_testkit::hostile::load`]).
//!
//! ```text
//! hostile_load CORPUS_DIR SCRATCH_DEV ORIGIN_DEV [--mutants N] [--seed S]
//! ```
//!
//! Exit status: 0 no failure, 1 failures, fewer than 200 mutants or
//! repaired mutants of too few kinds, 2 the run could not be done.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use snap_testkit::hostile::load::run;
use snap_testkit::hostile::load::Args;

fn main() -> ExitCode {
    let a = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hostile_load: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(t) if t.report() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("hostile_load: {e}");
            ExitCode::from(2)
        }
    }
}
