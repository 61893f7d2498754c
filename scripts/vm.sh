#!/usr/bin/env bash
# Boot the built kernel with virtme-ng and run one command in the guest.
#   scripts/vm.sh [--quiet] [--rwdir DIR]... -- COMMAND...
# The guest sees the host's filesystem read-only (9p) plus the --rwdir
# directories read-write. KVM is used when a short probe boot works with it,
# TCG otherwise; which one is printed. The kernel's console is shown too
# unless --quiet. Exit status is the command's.
. "$(dirname "$0")/lib.sh"

KDIR=${KDIR:-$("$TOP/scripts/kernel-dir.sh")}
VNG_OPTS=()
verbose=--verbose
while [ $# -gt 0 ]; do
	case "$1" in
	--rwdir) VNG_OPTS+=(--rwdir="$2"); shift 2 ;;
	--quiet) verbose=""; shift ;;
	--) shift; break ;;
	*) die "usage: vm.sh [--quiet] [--rwdir DIR]... -- COMMAND..." ;;
	esac
done
[ $# -gt 0 ] || die "usage: vm.sh [--rwdir DIR]... -- COMMAND..."

# vm_accel: print "kvm" if a guest boots with KVM here, else "tcg". The
# answer is remembered for this host boot and QEMU version.
vm_accel() {
	local stamp f
	stamp="$(cat /proc/sys/kernel/random/boot_id)-$(qemu-system-x86_64 --version | head -n1 | tr -c 'a-zA-Z0-9.\n' _)"
	f=$CACHE_DIR/accel-$stamp
	if [ ! -f "$f" ]; then
		if [ -r /dev/kvm ] && [ -w /dev/kvm ] &&
			timeout 60 vng --run "$KDIR" --disable-microvm --memory 512M --exec true >/dev/null 2>&1; then
			echo kvm > "$f"
		else
			echo tcg > "$f"
		fi
	fi
	cat "$f"
}

accel=${DMSNAP_ACCEL:-$(vm_accel)}
case "$accel" in
kvm) ;;
tcg) VNG_OPTS+=(--disable-kvm) ;;
*) die "DMSNAP_ACCEL must be kvm or tcg" ;;
esac
log "booting $(basename "$(dirname "$KDIR")") with $accel"

cmd=$(printf '%q ' "$@")
exec vng --run "$KDIR" --disable-microvm --cpus 2 --memory 1G ${verbose:+"$verbose"} \
	--cwd "$TOP" "${VNG_OPTS[@]}" --exec "$cmd"
