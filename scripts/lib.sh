# Common settings for the project's scripts. Source it; do not run it.
# shellcheck shell=bash

set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Kernel source we build against: Debian's linux-source-7.3 from trixie-backports.
KSRC_PKG=linux-source-7.3
KSRC_MIN_VERSION=7.3
LLVM_SUFFIX=-19
BINDGEN_MIN_VERSION=0.71.1

# Everything fetched or built lives outside the repository, here.
CACHE_DIR=${DMSNAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dm-snap-persistent-rs}
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# show_progress LOG: copy stdin to LOG and show every 100th line (Kbuild
# prints one line per step) with the time since the start, on stderr.
show_progress() {
	local n=0 t0 line
	t0=$(date +%s)
	while IFS= read -r line; do
		printf '%s\n' "$line" >> "$1"
		n=$((n + 1))
		if [ $((n % 100)) -eq 0 ]; then
			printf '    [%4ds, %5d steps] %s\n' $(($(date +%s) - t0)) "$n" "$line" >&2
		fi
	done
}

# vm_accel KDIR: print "kvm" if a guest of KDIR boots with KVM here, else
# "tcg" (DMSNAP_ACCEL=kvm|tcg forces one). The answer is remembered for this
# host boot and QEMU version.
vm_accel() {
	local kdir=$1 stamp f
	case "${DMSNAP_ACCEL:-}" in
	kvm | tcg) echo "$DMSNAP_ACCEL"; return ;;
	"") ;;
	*) die "DMSNAP_ACCEL must be kvm or tcg" ;;
	esac
	stamp="$(cat /proc/sys/kernel/random/boot_id)-$(qemu-system-x86_64 --version | head -n1 | tr -c 'a-zA-Z0-9.\n' _)"
	f=$CACHE_DIR/accel-$stamp
	if [ ! -f "$f" ]; then
		if [ -r /dev/kvm ] && [ -w /dev/kvm ] &&
			timeout 60 vng --run "$kdir" --disable-microvm --memory 512M --exec true >/dev/null 2>&1; then
			echo kvm > "$f"
		else
			echo tcg > "$f"
		fi
	fi
	cat "$f"
}

# Run as root, or through sudo when not root.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The inputs of the kernel build, one per line; their hash names the cached
# build. Anything that can change the built tree belongs here.
# The kernel's flavour: "test", the kernel the test command boots
# (kernel/guest.config), "debug" (DMSNAP_KERNEL=debug: guest.config with
# kernel/debug.config merged over it), "rt" (DMSNAP_KERNEL=rt: the debug
# kernel with kernel/rt.config, PREEMPT_RT, merged over it) or "bench"
# (DMSNAP_KERNEL=bench, for scripts/bench.sh: guest.config with the options
# of kernel/bench.config replaced). Each has its own cache key.
KERNEL_FLAVOUR=${DMSNAP_KERNEL:-test}
case "$KERNEL_FLAVOUR" in
test | debug | rt | bench) ;;
*) die "DMSNAP_KERNEL: test, debug, rt or bench, not $KERNEL_FLAVOUR" ;;
esac

# The configuration fragments of the kernel, merged in this order over
# tinyconfig. The recipe checks that every line of every fragment landed,
# so an option set twice would fail it: for "bench", the base is a copy of
# guest.config without the options bench.config sets (written into the
# cache, named by its content; the key hashes the copy).
kernel_fragments() {
	case "$KERNEL_FLAVOUR" in
	test) echo "$TOP/kernel/guest.config" ;;
	debug) printf '%s\n' "$TOP/kernel/guest.config" "$TOP/kernel/debug.config" ;;
	rt) printf '%s\n' "$TOP/kernel/guest.config" "$TOP/kernel/debug.config" "$TOP/kernel/rt.config" ;;
	bench)
		local opts base
		opts=$(sed -n 's/^\(CONFIG_[A-Za-z0-9_]*\)=.*/\1/p' "$TOP/kernel/bench.config")
		base=$CACHE_DIR/fragments/guest-for-bench-$(
			{ cat "$TOP/kernel/guest.config"; echo "$opts"; } | sha256sum | cut -c1-16
		).config
		if [ ! -f "$base" ]; then
			mkdir -p "$CACHE_DIR/fragments"
			grep -v -F -w -f <(echo "$opts") "$TOP/kernel/guest.config" > "$base.tmp"
			mv "$base.tmp" "$base"
		fi
		printf '%s\n' "$base" "$TOP/kernel/bench.config"
		;;
	esac
}

kernel_inputs() {
	local tarball=$1
	echo "source: $(basename "$(dirname "$(dirname "$(dirname "$tarball")")")")"
	echo "tarball-size: $(stat -c %s "$tarball")"
	echo "recipe: $(sha256sum < "$TOP/scripts/kernel-recipe.sh" | cut -d' ' -f1)"
	local f
	for f in $(kernel_fragments); do
		echo "config $(basename "$f"): $(sha256sum < "$f" | cut -d' ' -f1)"
	done
	local p
	for p in "$TOP"/patches/*.patch; do
		[ -e "$p" ] || continue
		# what the build applies: the diff, from its first "diff " line,
		# not the commit message or the date format-patch writes (the
		# whole file for a patch without such a line)
		echo "patch $(basename "$p"): $(awk '/^diff /{d=1} d' "$p" | sha256sum | cut -d' ' -f1)"
		grep -q '^diff ' "$p" || echo "patch $(basename "$p") (whole): $(sha256sum < "$p" | cut -d' ' -f1)"
	done
	echo "rustc: $(rustc --version)"
	echo "rust-src: $(rustc --print sysroot)"
	echo "clang: $(clang$LLVM_SUFFIX --version | head -n1)"
	echo "lld: $(ld.lld$LLVM_SUFFIX --version | head -n1)"
	echo "bindgen: $(bindgen --version)"
}

# Where the cached kernel source tarball is, without fetching (empty if none).
kernel_tarball() {
	ls "$CACHE_DIR"/source-*/usr/src/${KSRC_PKG}.tar.xz 2>/dev/null | sort -V | tail -n1
}

kernel_key() {
	kernel_inputs "$1" | sha256sum | cut -c1-16
}
