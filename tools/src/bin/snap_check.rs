// SPDX-License-Identifier: GPL-2.0-only

//! `snap_check <dev-or-image>`: checks the COW device of a persistent
//! snapshot. Exit status 0 clean, 1 problems, 2 could not read (or bad
//! command line).

#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Arg;
use clap::ArgAction;
use clap::Command;
use snap_tools::check::check;
use snap_tools::check::CheckOptions;
use snap_tools::check::CheckSummary;
use snap_tools::check::Problem;
use snap_tools::check::Verdict;
use snap_tools::cli::block_size_arg;
use snap_tools::cli::blocks_from;
use snap_tools::cli::force_read_arg;
use snap_tools::cli::json_string;
use snap_tools::cli::no_read_ahead_arg;
use snap_tools::io::FileIo;
use snap_tools::progress::Progress;

fn command() -> Command {
    Command::new("snap_check")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Check the COW device of a dm-snapshot persistent store (read-only)")
        .after_help(
            "Each problem is printed as '<severity>: <message>'. \
             Exit status: 0 clean, 1 problems found, 2 the device could not be read.",
        )
        .arg(
            Arg::new("device")
                .value_name("DEV-OR-IMAGE")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("COW block device or image file"),
        )
        .arg(
            Arg::new("quiet")
                .short('q')
                .long("quiet")
                .action(ArgAction::SetTrue)
                .help("Print nothing; only the exit status tells"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print one JSON document (problems and summary) instead of text"),
        )
        .arg(
            Arg::new("ignore-non-fatal-errors")
                .long("ignore-non-fatal-errors")
                .action(ArgAction::SetTrue)
                .help("Exit 0 when only warnings were found"),
        )
        .arg(
            Arg::new("skip-duplicates")
                .long("skip-duplicates")
                .action(ArgAction::SetTrue)
                .help("Do not look for duplicate chunks (memory then stays one chunk)"),
        )
        .arg(
            Arg::new("header-only")
                .long("header-only")
                .action(ArgAction::SetTrue)
                .help("Check the header only; read no metadata area"),
        )
        .arg(force_read_arg())
        .arg(block_size_arg())
        .arg(no_read_ahead_arg())
}

/// Where the output goes: human text, a JSON document, or nowhere.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Quiet,
    Text,
    Json,
}

fn opt_num<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

fn problem_json(p: &Problem) -> String {
    format!(
        "{{\"severity\":\"{}\",\"kind\":\"{}\",\"area\":{},\"index\":{},\"message\":{}}}",
        p.severity(),
        p.kind,
        opt_num(p.area),
        opt_num(p.index),
        json_string(&p.message)
    )
}

fn verdict_parts(v: &Verdict) -> (&'static str, Option<&str>, Option<u64>) {
    match v {
        Verdict::NewStore => ("new_store", None, None),
        Verdict::Invalid => ("invalid", None, None),
        Verdict::Valid(r) => ("valid", None, Some(r.next_free)),
        Verdict::HeaderValid => ("header_valid", None, None),
        Verdict::Refused(m) => ("refused", Some(m.as_str()), None),
    }
}

fn summary_json(s: &CheckSummary, exit: i32) -> String {
    let (verdict, message, next_free) = verdict_parts(&s.verdict);
    format!(
        "{{\"cow_bytes\":{},\"magic\":{},\"valid\":{},\"version\":{},\"chunk_size\":{},\"exceptions_per_area\":{},\"areas\":{},\"exceptions\":{},\"errors\":{},\"warnings\":{},\"verdict\":\"{verdict}\",\"verdict_message\":{},\"next_free\":{},\"exit_status\":{exit}}}",
        s.cow_bytes,
        opt_num(s.header.map(|h| h.magic)),
        opt_num(s.header.map(|h| h.valid)),
        opt_num(s.header.map(|h| h.version)),
        opt_num(s.layout.map(|l| l.chunk_sectors())),
        opt_num(s.layout.map(|l| l.exceptions_per_area())),
        s.areas,
        s.exceptions,
        s.errors,
        s.warnings,
        message.map_or_else(|| "null".to_string(), json_string),
        opt_num(next_free),
    )
}

fn summary_text(s: &CheckSummary) -> String {
    let mut out = String::new();
    if let Some(l) = s.layout {
        out.push_str(&format!(
            "chunk size {} sectors, {} exceptions per area, COW device {} bytes\n",
            l.chunk_sectors(),
            l.exceptions_per_area(),
            s.cow_bytes
        ));
        out.push_str(&format!(
            "{} exceptions in {} metadata areas read\n",
            s.exceptions, s.areas
        ));
    }
    out.push_str(&match &s.verdict {
        Verdict::NewStore => "module: would start a new, empty store\n".to_string(),
        Verdict::Invalid => "module: would load the snapshot as invalid\n".to_string(),
        Verdict::Valid(r) => format!(
            "module: would load {} exceptions, next_free {}\n",
            r.exceptions, r.next_free
        ),
        Verdict::HeaderValid => {
            "module: would load the store (header only: the areas were not read)\n".to_string()
        }
        Verdict::Refused(m) => format!("module: would refuse the device: {m}\n"),
    });
    out.push_str(&format!(
        "{} error(s), {} warning(s)\n",
        s.errors, s.warnings
    ));
    out
}

fn main() -> ExitCode {
    let m = command().get_matches();
    let Some(path) = m.get_one::<PathBuf>("device") else {
        return ExitCode::from(2);
    };
    let mode = if m.get_flag("quiet") {
        Mode::Quiet
    } else if m.get_flag("json") {
        Mode::Json
    } else {
        Mode::Text
    };
    let blocks = match blocks_from(&m) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("snap_check: --block-size: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = CheckOptions {
        blocks,
        duplicates: !m.get_flag("skip-duplicates"),
        header_only: m.get_flag("header-only"),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // Output errors (a closed pipe) must not change the verdict: the exit
    // status is what matters, so they are ignored.
    if mode == Mode::Json {
        let _ = write!(
            out,
            "{{\"tool\":\"snap_check\",\"json_version\":1,\"device\":{},\"problems\":[",
            json_string(&path.to_string_lossy())
        );
    }
    let mut first = true;
    let result = FileIo::open_read_as(path, !m.get_flag("force")).and_then(|mut io| {
        io.set_read_ahead(!m.get_flag("no-read-ahead"));
        let mut progress = Progress::new("snap_check", "areas", None);
        check(&io, &opts, &mut progress, |p| match mode {
            Mode::Quiet => {}
            Mode::Text => {
                let _ = writeln!(out, "{p}");
            }
            Mode::Json => {
                let sep = if first { "\n" } else { ",\n" };
                first = false;
                let _ = write!(out, "{sep}{}", problem_json(p));
            }
        })
    });
    let code = match &result {
        Ok(s) => s.exit_code(m.get_flag("ignore-non-fatal-errors")),
        Err(_) => 2,
    };
    match (mode, &result) {
        (Mode::Quiet, _) => {}
        (Mode::Text, Ok(s)) => {
            let _ = write!(out, "{}", summary_text(s));
        }
        (Mode::Text, Err(e)) => {
            let _ = out.flush();
            eprintln!("snap_check: {}: {e}", path.display());
        }
        (Mode::Json, Ok(s)) => {
            let _ = writeln!(out, "\n],\"summary\":{}}}", summary_json(s, code));
        }
        (Mode::Json, Err(e)) => {
            let _ = writeln!(
                out,
                "\n],\"io_error\":{},\"summary\":{{\"exit_status\":{code}}}}}",
                json_string(&e.to_string())
            );
        }
    }
    let _ = out.flush();
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
