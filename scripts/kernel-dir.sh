#!/usr/bin/env bash
# Print the cached kernel build directory for the current inputs (patches,
# config, toolchain), or fail when it has not been built: a build for other
# inputs is never used in its place.
. "$(dirname "$0")/lib.sh"

tarball=$(kernel_tarball)
[ -n "$tarball" ] || die "no kernel source fetched yet: run scripts/build-kernel.sh"
dir=$CACHE_DIR/kernel/$(kernel_key "$tarball")
[ -f "$dir/complete" ] || die "no kernel built for the current inputs ($dir): run scripts/build-kernel.sh"
echo "$dir/build"
