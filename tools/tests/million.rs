// SPDX-License-Identifier: GPL-2.0-only
//! A 1,000,000-exception store: restore from a dump, snap_check reports it
//! clean with the right count, snap_dump reproduces the dump byte for
//! byte. Chunk size 8 sectors: 256 exceptions per area, 3907 areas, a
//! 3.8 GiB sparse image of which only the metadata (16 MiB) is written.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use common::*;

const N: u64 = 1_000_000;

#[test]
fn a_million_exceptions_restore_check_clean_and_dump_identically() {
    let dir = scratch("million");
    let l = layout(8);
    let exceptions = kernel_order(l, N);
    let cow = cow_sectors_for(l, &exceptions, 16);
    let d1 = dir.join("d1.xml");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&d1).unwrap());
        writeln!(
            w,
            "<snap_store dump_version=\"1\" disk_version=\"1\" valid=\"1\" chunk_size=\"8\" cow_sectors=\"{cow}\">"
        )
        .unwrap();
        for e in &exceptions {
            writeln!(
                w,
                "  <exception old_chunk=\"{}\" new_chunk=\"{}\"/>",
                e.old_chunk, e.new_chunk
            )
            .unwrap();
        }
        w.write_all(b"</snap_store>\n").unwrap();
    }
    drop(exceptions);
    let img = dir.join("img");

    let t = Instant::now();
    let r = run(RESTORE, &["-i", s(&d1), "-o", s(&img)]);
    let t_restore = t.elapsed();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("wrote 1000000 exceptions in 3907 areas"),
        "{}",
        r.stdout
    );
    let m = std::fs::metadata(&img).unwrap();
    assert_eq!(m.len(), cow * 512);
    assert!(m.blocks() * 512 < 64 << 20, "only metadata is written");

    let t = Instant::now();
    let c = run(CHECK, &[s(&img)]);
    let t_check = t.elapsed();
    assert_eq!(c.code, 0, "{}", c.stdout);
    assert!(
        c.stdout
            .contains("1000000 exceptions in 3907 metadata areas read"),
        "{}",
        c.stdout
    );
    assert!(
        c.stdout.contains("module: would load 1000000 exceptions"),
        "{}",
        c.stdout
    );

    let d2 = dir.join("d2.xml");
    let t = Instant::now();
    let d = run(DUMP, &[s(&img), "-o", s(&d2)]);
    let t_dump = t.elapsed();
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert!(std::fs::read(&d1).unwrap() == std::fs::read(&d2).unwrap());
    eprintln!("1M exceptions: restore {t_restore:?}, check {t_check:?}, dump {t_dump:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
