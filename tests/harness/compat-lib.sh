# Shared helpers of the compatibility guest tests (store-merge-*,
# store-cow-compatible-*, store-serves-lvm2-*, tools-restored-*). Source it
# after lib.sh:
#   . "$DMSNAP_HARNESS/lib.sh"
#   . "$DMSNAP_HARNESS/compat-lib.sh"
# shellcheck shell=bash

# snap_tools [release]: the directory holding snap_check, snap_dump and
# snap_restore (target/debug, or target/release first when asked); skips the
# test when neither has them (build them on the host with
# `cargo build -p dm-snap-tools`).
snap_tools() {
	local order=(debug release) d
	[ "${1:-}" = release ] && order=(release debug)
	for d in "${order[@]}"; do
		if [ -x "$TOP/target/$d/snap_check" ] && [ -x "$TOP/target/$d/snap_dump" ] &&
			[ -x "$TOP/target/$d/snap_restore" ]; then
			echo "$TOP/target/$d"
			return 0
		fi
	done
	skip "no snap_check/snap_dump/snap_restore in $TOP/target/{debug,release}: run 'cargo build -p dm-snap-tools' on the host"
}

# merge_into_origin NAME ORIGIN COW CHUNK: turn the snapshot-origin device
# NAME (over ORIGIN) into a snapshot-merge of COW and wait for the merge to
# end; the snapshot devices of COW must be removed already (the origin is
# suspended first, as lvm2 does). Prints the final usage figures.
merge_into_origin() {
	dmsetup suspend "$1"
	dmsetup reload "$1" --table "0 $(sectors "$2") snapshot-merge $2 $3 P $4"
	dmsetup resume "$1"
	wait_merged "$1"
}

# patch_file FILE PATCH SECTOR COUNT: the first COUNT sectors of PATCH
# written into the regular file FILE at SECTOR (to keep the expected view
# of a device in step with the writes to it).
patch_file() {
	dd if="$2" of="$1" bs=512 count="$4" seek="$3" conv=notrunc status=none
}

# file_sum FILE: the checksum of a regular file, as cow_sum gives for a device.
file_sum() {
	md5sum < "$1" | cut -d' ' -f1
}
