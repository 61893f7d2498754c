// SPDX-License-Identifier: GPL-2.0-only

//! The fault test of the persistent store ([`snap_testkit::fault`]): every
//! I/O of the COW device, and every allocation of a table load, is failed in
//! turn while a snapshot does one thing, and each outcome is checked.
//!
//! ```text
//! fault_run SCENARIO c|ours ORIGIN SCRATCH [SEED]
//! ```
//!
//! Ends with `fault SCENARIO: P points, F failed, L invalidations lost`, and
//! exits 1 if a run failed, 2 if the test could not be run.

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

use snap_testkit::fault::run;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!(
            "usage: fault_run io-new|io-commit|io-next-area|io-merge|io-drop|alloc-new|alloc-load \
             c|ours ORIGIN SCRATCH [SEED]"
        );
        return ExitCode::from(2);
    }
    let seed = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(1);
    match run(
        &args[1],
        &args[2],
        Path::new(&args[3]),
        Path::new(&args[4]),
        seed,
    ) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fault_run: {e}");
            ExitCode::from(2)
        }
    }
}
