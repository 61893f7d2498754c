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

accel=$(vm_accel "$KDIR")
[ "$accel" = tcg ] && VNG_OPTS+=(--disable-kvm)
log "booting $(basename "$(dirname "$KDIR")") with $accel"

# DMSNAP_VM_MEMORY: the guest's memory (default 1G; the benchmark's disks
# need more).
# DMSNAP_KERNEL_ARGS: extra kernel command-line arguments.
[ -n "${DMSNAP_KERNEL_ARGS:-}" ] && VNG_OPTS+=(--append "$DMSNAP_KERNEL_ARGS")
cmd=$(printf '%q ' "$@")
exec vng --run "$KDIR" --disable-microvm --cpus "${DMSNAP_VM_CPUS:-2}" --memory "${DMSNAP_VM_MEMORY:-1G}" ${verbose:+"$verbose"} \
	--cwd "$TOP" "${VNG_OPTS[@]}" --exec "$cmd"
