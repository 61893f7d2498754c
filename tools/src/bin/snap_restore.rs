// SPDX-License-Identifier: GPL-2.0-only

//! `snap_restore -i <dump> -o <image-or-dev>`: writes the COW device of a
//! persistent snapshot from a dump. Exit status 0 written, 1 the dump is
//! bad or the target holds a store (nothing written), 2 could not read or
//! write (or bad command line).

#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Arg;
use clap::ArgAction;
use clap::Command;
use snap_tools::cli::block_size_arg;
use snap_tools::cli::blocks_from;
use snap_tools::cli::parse_size_sectors;
use snap_tools::io::same_file;
use snap_tools::io::BlockIo;
use snap_tools::io::FileIo;
use snap_tools::progress::Progress;
use snap_tools::restore::restore;
use snap_tools::restore::RestoreOptions;

fn command() -> Command {
    Command::new("snap_restore")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Write the COW device of a dm-snapshot persistent store from a dump")
        .after_help(
            "The dump is validated completely before anything is written; data chunks are \
             not written (a new image file is sparse). An existing target that holds a valid \
             store is refused unless --force is given. An existing target is never shrunk; a \
             block device keeps its size and is opened exclusively (O_EXCL). Exit status: 0 written, 1 bad dump or refused \
             target (nothing written), 2 could not read or write.",
        )
        .arg(
            Arg::new("input")
                .short('i')
                .long("input")
                .value_name("DUMP")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("The dump (a regular file: it is read twice)"),
        )
        .arg(
            Arg::new("output")
                .short('o')
                .long("output")
                .value_name("IMAGE-OR-DEV")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("Image file (created if missing) or block device to write"),
        )
        .arg(
            Arg::new("force")
                .short('f')
                .long("force")
                .action(ArgAction::SetTrue)
                .help("Overwrite a target that holds a valid snapshot store"),
        )
        .arg(
            Arg::new("size")
                .long("size")
                .value_name("SIZE")
                .value_parser(parse_size_sectors)
                .help(
                    "Size of a new image file, or a larger size for an existing one (never \
                     smaller): bytes, or a number with s (sectors), k, m, g, t \
                     [default: the dump's cow_sectors for a new file, else the target's size]",
                ),
        )
        .arg(
            Arg::new("quiet")
                .short('q')
                .long("quiet")
                .action(ArgAction::SetTrue)
                .help("Print nothing on success"),
        )
        .arg(block_size_arg())
}

fn run(m: &clap::ArgMatches) -> Result<(), (i32, String)> {
    let (Some(input), Some(output)) = (
        m.get_one::<PathBuf>("input"),
        m.get_one::<PathBuf>("output"),
    ) else {
        return Err((2, "-i and -o are required".into()));
    };
    let opts = RestoreOptions {
        blocks: blocks_from(m).map_err(|e| (2, format!("--block-size: {e}")))?,
        force: m.get_flag("force"),
        size_sectors: m.get_one::<u64>("size").copied(),
    };
    // Fail early on an unusable dump, before touching the target. The dump
    // is read twice (validated, then written), so it must be a regular
    // file: a pipe would be empty the second time.
    let dump = std::fs::metadata(input).map_err(|e| (2, format!("{}: {e}", input.display())))?;
    if !dump.is_file() {
        return Err((
            2,
            format!(
                "{}: not a regular file; the dump is read twice, save it to a file first",
                input.display()
            ),
        ));
    }
    if let Ok(out) = std::fs::metadata(output) {
        if same_file(&out, &dump) {
            return Err((
                2,
                format!(
                    "{}: is the dump itself ({}); not overwriting it",
                    output.display(),
                    input.display()
                ),
            ));
        }
    }
    File::open(input).map_err(|e| (2, format!("{}: {e}", input.display())))?;
    let (mut target, created) =
        FileIo::open_write(output, true).map_err(|e| (2, format!("{}: {e}", output.display())))?;
    let mut progress = Progress::new("snap_restore", "exceptions", None);
    let result = restore(
        || File::open(input).map(|f| BufReader::with_capacity(1 << 16, f)),
        &mut target,
        &opts,
        &mut progress,
    );
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            if created {
                drop(target);
                // Best effort: remove the empty file this run created.
                let _ = std::fs::remove_file(output);
            }
            return Err((e.exit_code(), e.to_string()));
        }
    };
    if !m.get_flag("quiet") {
        if !target.resizable() && summary.cow_sectors != summary.header.cow_sectors {
            eprintln!(
                "snap_restore: note: the dump's COW device had {} sectors, {} has {}",
                summary.header.cow_sectors,
                output.display(),
                summary.cow_sectors
            );
        }
        println!(
            "snap_restore: wrote {} exceptions in {} areas (chunk size {} sectors, valid {}) to {} ({} sectors)",
            summary.exceptions,
            summary.areas,
            summary.header.chunk_size,
            summary.header.valid,
            output.display(),
            summary.cow_sectors
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let m = command().get_matches();
    match run(&m) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("snap_restore: {message}");
            ExitCode::from(u8::try_from(code).unwrap_or(2))
        }
    }
}
