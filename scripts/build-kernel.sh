#!/usr/bin/env bash
# Fetch, patch, configure and build the guest kernel, cached outside the
# repository under a key made of every input (kernel_inputs in lib.sh: source
# version, patches, config fragment, recipe, toolchain versions). A cache hit
# is reused as it is; any changed input builds a new tree.
# Prints the build directory (the O= tree, usable as KDIR) on stdout.
. "$(dirname "$0")/lib.sh"
. "$TOP/scripts/kernel-recipe.sh"

tarball=$("$TOP/scripts/fetch-kernel.sh")
key=$(kernel_key "$tarball")
KROOT=$CACHE_DIR/kernel
dir=$KROOT/$key
mkdir -p "$KROOT"

# One build at a time; a second caller waits and then finds the cache warm.
exec 9>"$KROOT/.lock"
flock 9

if [ -f "$dir/complete" ]; then
	log "kernel cache hit: $dir"
	echo "$dir/build"
	exit 0
fi

log "kernel cache miss: building $dir from"
kernel_inputs "$tarball" | sed 's/^/    /' >&2
rm -rf "$dir"
mkdir -p "$dir/linux" "$dir/build"
kernel_inputs "$tarball" > "$dir/inputs"

recipe_unpack_and_patch "$tarball" "$dir"
recipe_configure "$dir"
recipe_build "$dir"
touch "$dir/complete"

# Drop unfinished trees and all but the four newest finished ones (test,
# debug and bench kernels, and one more): an old
# key is unreachable once an input changed.
for d in "$KROOT"/*/; do
	[ -f "$d/complete" ] || rm -rf "$d"
done
ls -1dt "$KROOT"/*/ | tail -n +5 | xargs -r rm -rf

echo "$dir/build"
