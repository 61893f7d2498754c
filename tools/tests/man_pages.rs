// SPDX-License-Identifier: GPL-2.0-only
//! The man pages (tools/man/*.8) name every option the tools take, and
//! render without a warning where man(1) is installed.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn page(tool: &str) -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("man")
        .join(format!("{tool}.8"));
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

/// The long options of `--help`, as `--name`.
fn options(bin: &str) -> Vec<String> {
    let help = run(bin, &["--help"]).stdout;
    help.split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-'))
        .filter(|w| !w.is_empty())
        .map(|w| format!("--{w}"))
        .collect()
}

#[test]
fn each_option_of_each_tool_is_in_its_man_page() {
    for (tool, bin) in [
        ("snap_check", CHECK),
        ("snap_dump", DUMP),
        ("snap_restore", RESTORE),
    ] {
        let (_, text) = page(tool);
        // roff escapes the dashes of an option as \-.
        let text = text.replace("\\-", "-");
        let opts = options(bin);
        assert!(opts.len() >= 4, "{tool}: {opts:?}");
        for o in opts {
            assert!(text.contains(&o), "{tool}.8 does not mention {o}");
        }
    }
}

#[test]
fn man_pages_render_without_warnings() {
    if Command::new("man").arg("--version").output().is_err() {
        eprintln!("no man(1) here; skipped");
        return;
    }
    for tool in ["snap_check", "snap_dump", "snap_restore"] {
        let (path, _) = page(tool);
        let out = Command::new("man")
            .args(["-l", "--warnings"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "")
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool}: {:?}", out);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "{tool}.8: {warnings}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("EXIT STATUS"));
    }
}
