// SPDX-License-Identifier: GPL-2.0-only

//! Pieces shared by the three command-line tools.

use clap::Arg;
use snap_format::BlockSizes;
use snap_format::SECTOR_SIZE;

use crate::header::block_sizes;

/// The `--block-size` option: logical block size in bytes (default 512).
pub fn block_size_arg() -> Arg {
    Arg::new("block-size")
        .long("block-size")
        .value_name("BYTES")
        .value_parser(clap::value_parser!(u32))
        .help("Logical block size of the devices, in bytes; bounds the chunk size [default: 512]")
}

/// The `--force` option of the reading tools: read a block device that is
/// in use (they open block devices exclusively otherwise).
pub fn force_read_arg() -> Arg {
    Arg::new("force")
        .short('f')
        .long("force")
        .action(clap::ArgAction::SetTrue)
        .help(
            "Read a block device that is in use (a live snapshot's COW device); what the \
             snapshot writes meanwhile can make the result inconsistent",
        )
}

/// The `--no-read-ahead` option of the reading tools.
pub fn no_read_ahead_arg() -> Arg {
    Arg::new("no-read-ahead")
        .long("no-read-ahead")
        .action(clap::ArgAction::SetTrue)
        .help(
            "Read one metadata area at a time, waiting for each (by default the device is \
             asked for the next 64 areas ahead)",
        )
}

/// The block sizes of `--block-size`.
///
/// # Errors
///
/// The format core's message for a block size that is not a power of two
/// in `512..=2^30`.
pub fn blocks_from(m: &clap::ArgMatches) -> Result<BlockSizes, String> {
    block_sizes(m.get_one::<u32>("block-size").copied()).map_err(|e| e.to_string())
}

/// Parses a size: a number of bytes, or a number with a suffix `s`
/// (512-byte sectors), `k`, `m`, `g`, `t` (powers of 1024, upper case
/// too); returns it in sectors.
///
/// # Errors
///
/// A message if the text is not such a size or is not a whole number of
/// sectors.
pub fn parse_size_sectors(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (bytes, or a number with s, k, m, g or t)"))?;
    let unit: u64 = match suffix {
        "" => 1,
        "s" | "S" => u64::from(SECTOR_SIZE),
        "k" | "K" => 1 << 10,
        "m" | "M" => 1 << 20,
        "g" | "G" => 1 << 30,
        "t" | "T" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown size suffix {suffix:?} (s, k, m, g or t)"
            ))
        }
    };
    let bytes = n
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    let sector = u64::from(SECTOR_SIZE);
    if bytes % sector != 0 {
        return Err(format!(
            "{text:?} is not a whole number of 512-byte sectors"
        ));
    }
    Ok(bytes / sector)
}

/// Quotes `s` as a JSON string.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len().saturating_add(2));
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
