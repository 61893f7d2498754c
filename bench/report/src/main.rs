//! bench_report: the store benchmark's raw records as tables and a plot.
//!
//! ```text
//! bench_report [--title TITLE] [--note LINE]... RAW.csv OUTDIR
//! ```
//! writes OUTDIR/stores.md (the title, the notes, one table per workload),
//! OUTDIR/stores.csv and OUTDIR/stores.svg (one panel per workload).

use std::process::ExitCode;
use std::{env, fs, path::PathBuf};

fn run() -> Result<(), String> {
    let mut title = String::from("Store benchmark");
    let mut notes = Vec::new();
    let mut paths = Vec::new();
    let mut args = env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--title" => title = args.next().ok_or("--title needs a value")?,
            "--note" => notes.push(args.next().ok_or("--note needs a value")?),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let [raw, out] = &paths[..] else {
        return Err("usage: bench_report [--title TITLE] [--note LINE]... RAW.csv OUTDIR".into());
    };
    let text = fs::read_to_string(raw).map_err(|e| format!("{}: {e}", raw.display()))?;
    let records = dm_snap_bench::parse(&text).map_err(|e| format!("{}: {e}", raw.display()))?;
    let sum = dm_snap_bench::summarize(&records);
    if sum.is_empty() {
        return Err(format!(
            "{}: no measured rounds (only warm-ups, or nothing)",
            raw.display()
        ));
    }
    fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut md = format!("# {title}\n\n");
    for n in &notes {
        md.push_str(n);
        md.push_str("\n\n");
    }
    md.push_str(&dm_snap_bench::markdown(&sum));
    let write = |name: &str, body: &str| {
        let p = out.join(name);
        fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("stores.md", &md)?;
    write("stores.csv", &dm_snap_bench::csv(&sum))?;
    write("stores.svg", &dm_snap_bench::svg(&sum, &title))?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_report: {e}");
            ExitCode::FAILURE
        }
    }
}
