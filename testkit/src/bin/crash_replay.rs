// SPDX-License-Identifier: GPL-2.0-only

//! Replays a dm-log-writes log of a snapshot's origin and COW device at
//! every crash point, activates a snapshot over each and checks it
//! ([`snap_testkit::replay::kernel`], where the options are described).
//!
//! ```text
//! crash_replay --log DEV --origin-len BYTES --cow-len BYTES --chunk SECTORS
//!              --scratch-origin DEV[,DEV] --scratch-cow DEV[,DEV] --label TEXT
//!              [--cow-start BYTES] [--type P|PO] [--from-mark TEXT]
//!              [--points durable,mark-plus,torn,every|none] [--points-from MARK]
//!              [--drop-commit K] [--stop-after-lost N] [--max-report N]
//!              [--subsets on|off] [--subset-kernel N] [--subset-seed N]
//!              [--plain-commit K]
//! ```
//!
//! Exit status: 0 all good, 3 some lost or failed, 2 the replay could not
//! run.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use snap_testkit::replay::kernel::run;
use snap_testkit::replay::kernel::Args;

fn main() -> ExitCode {
    let a = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("crash_replay: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(t) if t.report(&a.label) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(3),
        Err(e) => {
            eprintln!("crash_replay {}: {e}", a.label);
            ExitCode::from(2)
        }
    }
}
