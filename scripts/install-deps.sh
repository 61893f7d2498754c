#!/usr/bin/env bash
# Install everything the build, the VM and the tests need. Idempotent: each
# step checks first and does nothing when its piece is already there.
. "$(dirname "$0")/lib.sh"

APT_PKGS=(
	# kernel build with LLVM
	clang-19 lld-19 llvm-19 libclang-19-dev
	flex bison bc libelf-dev libssl-dev cpio kmod make python3 xz-utils zstd
	# the VM
	qemu-system-x86 qemu-utils udev
	# guest userspace (shared with the guest over 9p by virtme-ng)
	busybox-static dmsetup lvm2 fio e2fsprogs
	# the tools benchmark (maximum RSS)
	time
)

missing=()
for p in "${APT_PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "apt-get install ${missing[*]}"
	as_root apt-get update -q
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
	log "apt packages: all present"
fi

command -v rustc >/dev/null || die "rustc not found (the machine's rustup toolchain is expected)"
if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
	log "rustup component add rust-src"
	rustup component add rust-src
fi

version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
bg_ver=$(bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ -z "$bg_ver" ] || ! version_ge "$bg_ver" "$BINDGEN_MIN_VERSION"; then
	log "cargo install bindgen-cli (have: ${bg_ver:-none}, need >= $BINDGEN_MIN_VERSION)"
	LIBCLANG_PATH=/usr/lib/llvm-19/lib cargo install --locked bindgen-cli
fi

# cargo-fuzz for the bounded fuzz run of the format core (run with
# RUSTC_BOOTSTRAP=1 on the stable toolchain, see format/fuzz/run.sh).
if ! cargo fuzz --version >/dev/null 2>&1; then
	log "cargo install cargo-fuzz"
	cargo install --locked cargo-fuzz
fi

if ! command -v vng >/dev/null; then
	log "pip install virtme-ng"
	python3 -m pip install -q virtme-ng
fi
log "dependencies ready: $(rustc --version), bindgen $(bindgen --version | awk '{print $2}'), $(vng --version 2>&1 | head -1)"
