#!/usr/bin/env bash
# The demo, run inside the guest by scripts/demo.sh: a snapshot of a RAM disk
# served by our store (or, with "c", by dm-snapshot's C store), written to,
# reloaded and merged back into its origin, each step shown as it happens.
#   guest-demo.sh ours|c
store=${1:-ours}
export DM_DISABLE_UDEV=1
# The guest tests' helpers: among them a dmsetup whose removes retry (udev
# probes new devices in the guest) and wait_merged.
DMSNAP_HARNESS=$(cd "$(dirname "$0")/../harness" && pwd)
DMSNAP_TEST_NAME=demo
. "$DMSNAP_HARNESS/lib.sh"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

if [ "$store" = ours ]; then
	run modprobe dm-snapshot persistent_store=0
	run insmod "$TOP/dm_snap_persistent.ko"
	run grep -E 'dm_snap|dm_snapshot' /proc/modules
else
	run modprobe dm-snapshot
fi
run modprobe brd rd_nr=2 rd_size=8192

origin=/dev/ram0 cow=/dev/ram1
size=$(blockdev --getsz $origin)
dd if=/dev/urandom of=/tmp/before bs=1M count=1 status=none
dd if=/tmp/before of=$origin bs=1M oflag=direct status=none

# The snapshot first: the origin target learns the chunk size to split
# writes at when it is resumed (lvm2 reloads the origin for this).
run dmsetup create snap --table "0 $size snapshot $origin $cow P 8"
run dmsetup create base --table "0 $size snapshot-origin $origin"
run dmsetup status snap

say "write 1 MiB to the origin: the snapshot keeps the old data"
dd if=/dev/urandom of=/tmp/after bs=1M count=1 status=none
run dd if=/tmp/after of=/dev/mapper/base bs=1M oflag=direct status=none
run dmsetup status snap
say "cmp <snapshot> /tmp/before && cmp <origin> /tmp/after"
cmp <(dd if=/dev/mapper/snap bs=1M count=1 iflag=direct status=none) /tmp/before
cmp <(dd if=/dev/mapper/base bs=1M count=1 iflag=direct status=none) /tmp/after
echo "snapshot: old data; origin: new data"

say "write to the snapshot itself, then reload it from its COW device"
dd if=/dev/urandom of=/tmp/snapwrite bs=64k count=1 status=none
run dd if=/tmp/snapwrite of=/dev/mapper/snap bs=64k seek=32 oflag=direct status=none
run dmsetup remove snap
run dmsetup create snap --table "0 $size snapshot $origin $cow P 8"
run dmsetup status snap
cmp <(dd if=/dev/mapper/snap bs=1M count=1 iflag=direct status=none) /tmp/before
cmp <(dd if=/dev/mapper/snap bs=64k skip=32 count=1 iflag=direct status=none) /tmp/snapwrite
echo "after reload: the snapshot still holds its data"

say "merge the snapshot back into the origin (snapshot-merge)"
run dmsetup suspend base
run dmsetup remove snap
run dmsetup reload base --table "0 $size snapshot-merge $origin $cow P 8"
run dmsetup resume base
# The merge is done when allocated == metadata in "a/b m".
wait_merged base > /dev/null
run dmsetup status base
cmp <(dd if=/dev/mapper/base bs=1M count=1 iflag=direct status=none) /tmp/before
cmp <(dd if=/dev/mapper/base bs=64k skip=32 count=1 iflag=direct status=none) /tmp/snapwrite
echo "merged: the origin now holds the snapshot's data"
run dmsetup remove_all
say "demo finished"
