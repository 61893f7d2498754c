#!/usr/bin/env bash
# Build everything (dependencies, kernel, module) and run the demo in the VM:
# a snapshot served by our store on dm-snapshot without its C store.
#   scripts/demo.sh          our store
#   scripts/demo.sh --c      the same demo with dm-snapshot's C store
. "$(dirname "$0")/lib.sh"

store=ours
[ "${1:-}" = "--c" ] && store=c
"$TOP/scripts/install-deps.sh"
KDIR=$("$TOP/scripts/build-kernel.sh")
export KDIR
make -C "$TOP" -s modules
"$TOP/scripts/vm.sh" --quiet -- "$TOP/tests/demo/guest-demo.sh" "$store" 2>&1 |
	grep -v -e '^Udev is running and DM_DISABLE_UDEV'
exit "${PIPESTATUS[0]}"
