// SPDX-License-Identifier: GPL-2.0-only

//! `snap_dump <dev-or-image>`: the header and exceptions of a persistent
//! snapshot's COW device as a dump (XML, dump version 1). Exit status 0
//! dumped, 1 the store is bad or absent, 2 could not read or write (or bad
//! command line).

#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fs::File;
use std::io::BufWriter;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Arg;
use clap::ArgAction;
use clap::Command;
use snap_tools::cli::block_size_arg;
use snap_tools::cli::blocks_from;
use snap_tools::cli::force_read_arg;
use snap_tools::cli::no_read_ahead_arg;
use snap_tools::dump::dump;
use snap_tools::dump::DumpError;
use snap_tools::io::same_file;
use snap_tools::io::FileIo;
use snap_tools::progress::Progress;
use snap_tools::repair::repair;
use snap_tools::repair::RepairError;
use snap_tools::repair::RepairOptions;
use snap_tools::snap_format::BlockSizes;

fn command() -> Command {
    Command::new("snap_dump")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Dump the header and exceptions of a dm-snapshot persistent store (read-only)")
        .after_help(
            "The dump format (XML, dump_version 1) is described in tools/README.md. \
             With --repair, what can be salvaged is dumped and each record dropped is reported. \
             Exit status: 0 dumped, 1 the store is bad or absent, 2 could not read or write.",
        )
        .arg(
            Arg::new("device")
                .value_name("DEV-OR-IMAGE")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("COW block device or image file"),
        )
        .arg(
            Arg::new("output")
                .short('o')
                .long("output")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Write the dump to FILE instead of standard output"),
        )
        .arg(
            Arg::new("quiet")
                .short('q')
                .long("quiet")
                .action(ArgAction::SetTrue)
                .help("Print no notes or warnings; errors are still printed"),
        )
        .arg(
            Arg::new("repair")
                .long("repair")
                .action(ArgAction::SetTrue)
                .help(
                    "Dump every exception that can be salvaged from a damaged store, \
                     and report each record dropped and why",
                ),
        )
        .arg(
            Arg::new("salvage-invalid")
                .long("salvage-invalid")
                .action(ArgAction::SetTrue)
                .requires("repair")
                .help(
                    "With --repair: salvage a snapshot whose header marks it invalid \
                     (it lost data when it overflowed or failed)",
                ),
        )
        .arg(
            Arg::new("past-end-marker")
                .long("past-end-marker")
                .action(ArgAction::SetTrue)
                .requires("repair")
                .help(
                    "With --repair: go on past the first end marker and unreadable areas \
                     to the last area of the device (for a zeroed or torn area; the \
                     areas of an older store on the device look like real ones)",
                ),
        )
        .arg(force_read_arg())
        .arg(block_size_arg())
        .arg(no_read_ahead_arg())
}

/// Refuses an output that would destroy data before it is opened (opening
/// truncates it): the COW device itself, under any name, or any block
/// device.
fn check_output(input: &Path, output: &Path) -> Result<(), (i32, String)> {
    let Ok(out) = std::fs::metadata(output) else {
        return Ok(());
    };
    if out.file_type().is_block_device() {
        return Err((
            2,
            format!(
                "{}: is a block device; a dump goes to a file",
                output.display()
            ),
        ));
    }
    let cow = std::fs::metadata(input).map_err(|e| (2, format!("{}: {e}", input.display())))?;
    if same_file(&out, &cow) {
        return Err((
            2,
            format!(
                "{}: is the COW device itself ({}); not overwriting it",
                output.display(),
                input.display()
            ),
        ));
    }
    Ok(())
}

fn run(m: &clap::ArgMatches) -> Result<(), (i32, String)> {
    let path = m
        .get_one::<PathBuf>("device")
        .ok_or_else(|| (2, "no device given".to_string()))?;
    let blocks = blocks_from(m).map_err(|e| (2, format!("--block-size: {e}")))?;
    let mut io = FileIo::open_read_as(path, !m.get_flag("force"))
        .map_err(|e| (2, format!("{}: {e}", path.display())))?;
    io.set_read_ahead(!m.get_flag("no-read-ahead"));
    let sink: Box<dyn Write> = match m.get_one::<PathBuf>("output") {
        Some(o) => {
            check_output(path, o)?;
            Box::new(File::create(o).map_err(|e| (2, format!("{}: {e}", o.display())))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 16, sink);
    let mut progress = Progress::new("snap_dump", "areas", None);
    if m.get_flag("repair") {
        return run_repair(m, path, &io, blocks, &mut out, &mut progress);
    }
    let summary = dump(&io, blocks, &mut out, &mut progress);
    let flushed = out.flush();
    let summary =
        summary.map_err(|e: DumpError| (e.exit_code(), format!("{}: {e}", path.display())))?;
    flushed.map_err(|e| (2, format!("writing the dump failed: {e}")))?;
    if m.get_flag("quiet") {
        return Ok(());
    }
    if summary.header.valid == 0 {
        eprintln!("snap_dump: note: the snapshot is marked invalid: the module reads no exception, so none is dumped");
    }
    if let Some(w) = summary.warning {
        eprintln!("snap_dump: warning: {w}");
    }
    Ok(())
}

/// `--repair`: the salvage dump, each dropped record on standard error,
/// then a summary (unless `-q`).
fn run_repair(
    m: &clap::ArgMatches,
    path: &Path,
    io: &FileIo,
    blocks: BlockSizes,
    out: &mut impl Write,
    progress: &mut Progress,
) -> Result<(), (i32, String)> {
    let quiet = m.get_flag("quiet");
    let opts = RepairOptions {
        blocks,
        salvage_invalid: m.get_flag("salvage-invalid"),
        past_end_marker: m.get_flag("past-end-marker"),
    };
    let summary = repair(io, &opts, out, progress, |note| {
        if !quiet {
            eprintln!("snap_dump: repair: {note}");
        }
    });
    let flushed = out.flush();
    let summary =
        summary.map_err(|e: RepairError| (e.exit_code(), format!("{}: {e}", path.display())))?;
    flushed.map_err(|e| (2, format!("writing the dump failed: {e}")))?;
    if quiet {
        return Ok(());
    }
    let dropped = summary.dropped_total();
    let reasons: Vec<String> = summary
        .dropped
        .iter()
        .map(|(why, n)| format!("{n} {why}"))
        .collect();
    eprintln!(
        "snap_dump: repair: kept {} exceptions, dropped {dropped} records{}{}",
        summary.kept,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        if summary.was_invalid {
            "; the header marked the snapshot invalid: the dump marks it valid"
        } else {
            ""
        }
    );
    Ok(())
}

fn main() -> ExitCode {
    let m = command().get_matches();
    match run(&m) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("snap_dump: {message}");
            ExitCode::from(u8::try_from(code).unwrap_or(2))
        }
    }
}
