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
"$TOP/scripts/vm.sh" -- "$TOP/tests/demo/guest-demo.sh" "$store"
