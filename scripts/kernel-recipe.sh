# The steps that make the kernel tree: unpack, patch, configure, build.
# Sourced by build-kernel.sh. This file's hash is part of the cache key, so
# change it only when the built tree should change.
# shellcheck shell=bash

# recipe_make DIR ARGS...: make in the source tree DIR/linux with O=DIR/build.
recipe_make() {
	local dir=$1
	shift
	make -C "$dir/linux" O="$dir/build" LLVM="$LLVM_SUFFIX" "$@"
}

recipe_unpack_and_patch() {
	local tarball=$1 dir=$2 p
	log "unpacking $(basename "$tarball")"
	tar -xf "$tarball" -C "$dir/linux" --strip-components=1
	for p in "$TOP"/patches/*.patch; do
		[ -e "$p" ] || continue
		log "applying $(basename "$p")"
		patch -d "$dir/linux" -p1 --quiet --forward < "$p"
	done
}

recipe_configure() {
	local dir=$1 cfg=$dir/build/.config line opt bad=0 frags
	mapfile -t frags < <(kernel_fragments)
	log "configuring: tinyconfig + ${frags[*]#"$TOP/"}"
	recipe_make "$dir" -s tinyconfig
	"$dir/linux/scripts/kconfig/merge_config.sh" -m -O "$dir/build" "$cfg" "${frags[@]}" >/dev/null
	recipe_make "$dir" -s olddefconfig
	# Every option the fragment asks for must have landed: Kconfig silently
	# drops what a dependency forbids (CONFIG_RUST without a usable toolchain).
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=n)
			opt=${line%%=*}
			if grep -q "^$opt=[ym]" "$cfg"; then
				echo "  $opt: wanted n, got $(grep "^$opt=" "$cfg")" >&2
				bad=1
			fi ;;
		CONFIG_*=*)
			if ! grep -qx "$line" "$cfg"; then
				echo "  $line: got '$(grep "^${line%%=*}=" "$cfg" || echo unset)'" >&2
				bad=1
			fi ;;
		esac
	done < <(cat "${frags[@]}")
	[ "$bad" -eq 0 ] || die "kernel config does not match ${frags[*]#"$TOP/"} (see above)"
	recipe_make "$dir" -s rustavailable >&2
}

recipe_build() {
	local dir=$1 start jobs
	jobs=$(nproc)
	start=$(date +%s)
	log "building bzImage and modules with -j$jobs (full log: $dir/build.log)"
	if ! recipe_make "$dir" -j"$jobs" bzImage modules 2>&1 | show_progress "$dir/build.log"; then
		die "kernel build failed, see $dir/build.log"
	fi
	log "kernel built in $(($(date +%s) - start)) s"
}
