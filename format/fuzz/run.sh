#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Builds and runs the parse_cow fuzz target for a bounded time.
# Usage: format/fuzz/run.sh [SECONDS]   (default 30)
# Exits non-zero if the target crashes; the input is left in
# format/fuzz/artifacts/parse_cow/. New corpus entries go to a temporary
# directory, so the committed seed corpus stays as it is.
#
# cargo-fuzz needs nightly flags; the stable toolchain allows them with
# RUSTC_BOOTSTRAP=1. Install it with: cargo install cargo-fuzz --locked
set -euo pipefail

secs="${1:-30}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."

export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

start=$(date +%s)
cargo fuzz build parse_cow
echo "fuzz build: $(( $(date +%s) - start )) s"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
cargo fuzz run parse_cow "$work" fuzz/corpus/parse_cow -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=262144
echo "fuzz run: $(( $(date +%s) - start )) s, no crash"
