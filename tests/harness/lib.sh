# Helpers for guest tests. Source it first thing:
#   . "$DMSNAP_HARNESS/lib.sh"
# A test exits 0 when it passes, 77 when it skips, anything else when it
# fails; `fail` prints why. Every test cleans up what it made (dm devices,
# brd, modules) in its EXIT trap, so the next test starts clean.
# shellcheck shell=bash

set -euo pipefail

TOP=$(cd "$DMSNAP_HARNESS/../.." && pwd)
# The module under test; scripts/bench.sh names one built for its kernel.
MODULE_KO=${DMSNAP_MODULE_KO:-$TOP/dm_snap_persistent.ko}
SKIP=77

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

skip() {
	echo "SKIP: $*" >&2
	exit "$SKIP"
}

note() {
	echo "--- $*"
}

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
	[ "$2" = "$3" ] || fail "$1: expected '$2', got '$3'"
}

# expect_fail WHAT COMMAND...: the command must fail.
expect_fail() {
	local what=$1
	shift
	if "$@"; then
		fail "$what: '$*' succeeded"
	fi
}

# Kernel log lines printed since this test began.
test_dmesg() {
	dmesg --notime | sed -n "/dmsnap-test: begin $DMSNAP_TEST_NAME\$/,\$p"
}

# expect_dmesg REGEX: the kernel printed a line matching REGEX during this test.
expect_dmesg() {
	test_dmesg | grep -E -q -- "$1" || fail "kernel log has no line matching '$1'"
}

# --- cleanup: functions registered here run at exit, last first
_cleanups=()
on_exit() {
	_cleanups+=("$*")
}
_run_cleanups() {
	local rc=$? i
	set +e
	for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do
		eval "${_cleanups[$i]}" >/dev/null 2>&1
	done
	exit $rc
}
trap _run_cleanups EXIT

# --- the testkit/ crate's tools
# crash_bin TOOL...: copies every TOOL from the testkit/ crate's build
# directory (release, else debug) into the guest's own memory and sets BIN
# to that copy; skips the test without one. The tests run these tools
# hundreds of times, and under TCG each exec over the host's 9p share costs
# about 0.1 s more than one from memory.
crash_bin() {
	local d t found
	for d in release debug; do
		found=1
		for t in "$@"; do
			[ -x "$TOP/target/$d/$t" ] || found=0
		done
		if [ "$found" -eq 1 ]; then
			BIN=$TMP/bin
			mkdir -p "$BIN"
			for t in "$@"; do
				cp "$TOP/target/$d/$t" "$BIN/" || fail "crash_bin: cannot copy $t"
			done
			note "crash tools: $TOP/target/$d"
			return 0
		fi
	done
	skip "no $* in $TOP/target/{release,debug}: run 'cargo build --release -p dm-snap-testkit' on the host"
}

# --- kernel reports
# c_store_reports_begin / c_store_reports_end: the kernel reports (WARNING,
# BUG...) logged between these two calls are the C store's, reported by
# the harness but not failing the test. Call them only around a phase that
# runs with our module unloaded (in_store c), so that nothing of ours can
# hide there.
c_store_reports_begin() {
	[ ! -d /sys/module/dm_snap_persistent ] || fail "c_store_reports_begin: our module is loaded"
	echo "dmsnap-test: c-store-reports begin" > /dev/kmsg
}
c_store_reports_end() {
	echo "dmsnap-test: c-store-reports end" > /dev/kmsg
}

# --- modules
# load_dm_snapshot c|none: load dm-snapshot with its C persistent store
# registered (c) or left out (none). Unloads a dm-snapshot loaded otherwise.
load_dm_snapshot() {
	local want=$1 param
	case "$want" in
	c) param=1 ;;
	none) param=0 ;;
	*) fail "load_dm_snapshot: c or none" ;;
	esac
	if [ -d /sys/module/dm_snapshot ]; then
		[ "$(cat /sys/module/dm_snapshot/parameters/persistent_store)" = "$( [ $param = 1 ] && echo Y || echo N)" ] && return 0
		rmmod dm_snapshot
	fi
	modprobe dm-snapshot persistent_store=$param
	on_exit "rmmod dm_snapshot"
}

# --- block devices
# make_ram_disks COUNT SIZE_KIB: /dev/ram0 .. /dev/ram<COUNT-1>, zeroed.
make_ram_disks() {
	[ -d /sys/module/brd ] && rmmod brd
	modprobe brd rd_nr="$1" rd_size="$2" max_part=0
	on_exit "rmmod brd"
}

# sectors DEV: size in 512-byte sectors.
sectors() {
	blockdev --getsz "$1"
}

# make_pattern FILE KIB: KIB KiB of random data.
make_pattern() {
	dd if=/dev/urandom of="$1" bs=1024 count="$2" status=none
}

# write_at DEV FILE OFFSET_KIB: write FILE to DEV at OFFSET_KIB, bypassing
# the page cache.
write_at() {
	dd if="$2" of="$1" bs=1024 seek="$3" oflag=direct conv=notrunc status=none
}

# write_sectors DEV FILE SECTOR COUNT: the first COUNT sectors of FILE to DEV
# at SECTOR, in one write.
write_sectors() {
	dd if="$2" of="$1" bs=$(($4 * 512)) count=1 seek=$(($3 * 512)) oflag=direct,seek_bytes conv=notrunc status=none
}

# read_at DEV OFFSET_KIB KIB: the bytes there, on stdout.
read_at() {
	dd if="$1" bs=1024 skip="$2" count="$3" iflag=direct status=none
}

# same_data WHAT DEV OFFSET_KIB FILE: DEV holds FILE at OFFSET_KIB.
same_data() {
	local size
	size=$(($(stat -c %s "$4") / 1024))
	cmp -s <(read_at "$2" "$3" "$size") "$4" || fail "$1: $2 at ${3} KiB differs from $(basename "$4")"
}

# --- device-mapper
# udev in the guest opens new dm devices to probe them, which can make a
# remove right after a create fail with EBUSY: removes retry.
dmsetup() {
	if [ "${1:-}" = remove ]; then
		shift
		command dmsetup remove --retry "$@"
	else
		command dmsetup "$@"
	fi
}

dm_remove_all_on_exit() {
	on_exit "dmsetup remove_all --force"
}

# snapshot_table ORIGIN COW TYPE CHUNK: the table line of a snapshot.
snapshot_table() {
	echo "0 $(sectors "$1") snapshot $1 $2 $3 $4"
}

origin_table() {
	echo "0 $(sectors "$1") snapshot-origin $1"
}

TMP=$(mktemp -d)
on_exit "rm -rf $TMP"

# report_ktap_cases KTAP: report each "ok N name" / "not ok N name" case of
# a KUnit suite's KTAP output to the host as a test of its own.
report_ktap_cases() {
	echo "$1" | sed -n 's/^[[:space:]]\+ok [0-9]\+ \([^ #]*\).*/PASS \1/p; s/^[[:space:]]\+not ok [0-9]\+ \([^ #]*\).*/FAIL \1/p' \
		>> "$DMSNAP_RESULTS/$DMSNAP_TEST_NAME.cases"
}

# --- stores
# use_store c|ours: make the persistent store of dm-snapshot's C code (c) or
# of our module (ours) the one that serves "P" tables.
use_store() {
	case "$1" in
	c)
		[ -d /sys/module/dm_snap_persistent ] && rmmod dm_snap_persistent
		load_dm_snapshot c
		;;
	ours)
		load_dm_snapshot none
		modprobe dm-bufio
		if [ ! -d /sys/module/dm_snap_persistent ]; then
			insmod "$MODULE_KO"
			on_exit "rmmod dm_snap_persistent"
		fi
		;;
	*) fail "use_store: c or ours" ;;
	esac
}

# in_store STORE COMMAND...: run COMMAND in a subshell with STORE serving "P";
# whatever it sets up (on_exit) is torn down when it ends.
in_store() {
	local store=$1
	shift
	(
		_cleanups=()
		trap _run_cleanups EXIT
		use_store "$store"
		"$@"
	)
}

# same_on_both_stores COMMAND...: COMMAND prints what it observed; it must
# succeed with both stores and print the same.
same_on_both_stores() {
	in_store c "$@" > "$TMP/c.out" || { cat "$TMP/c.out"; fail "with the C store: $* failed"; }
	in_store ours "$@" > "$TMP/ours.out" || { cat "$TMP/ours.out"; fail "with our store: $* failed"; }
	echo "--- observed (both stores):"
	cat "$TMP/c.out"
	diff -u "$TMP/c.out" "$TMP/ours.out" || fail "our store differs from the C store"
}

# wait_merged NAME [TRIES]: poll the status of the snapshot-merge device NAME
# (every 0.2 s, at most TRIES times, default 300) until allocated == metadata;
# prints its usage figures ("a/b m"); fails if the merge does not end.
wait_merged() {
	local st a m i tries=${2:-300}
	for ((i = 0; i < tries; i++)); do
		st=$(dmsetup status "$1")
		a=$(echo "$st" | cut -d' ' -f4 | cut -d/ -f1)
		m=$(echo "$st" | cut -d' ' -f5)
		[ "$a" = "$m" ] && break
		sleep 0.2
	done
	[ "$a" = "$m" ] || fail "merge of $1 not done after $tries polls: $st"
	echo "$st" | cut -d' ' -f4-
}

# snapshot_status NAME: the usage figures of a snapshot ("a/b m", "Invalid", ...).
snapshot_status() {
	dmsetup status "$1" | cut -d' ' -f4-
}

# slice NAME DEV START SECTORS: a dm-linear device of SECTORS sectors of DEV
# from START on, for devices of any size.
slice() {
	dmsetup create "$1" --table "0 $4 linear $2 $3"
}

# le32 N / le64 N: N as little-endian bytes, on stdout.
le32() {
	printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)))"
}
le64() {
	le32 $(($1 & 0xffffffff))
	le32 $((($1 >> 32) & 0xffffffff))
}

# write_header DEV MAGIC VALID VERSION CHUNK: a store header at sector 0.
write_header() {
	{ le32 "$2"; le32 "$3"; le32 "$4"; le32 "$5"; } > "$TMP/header"
	dd if="$TMP/header" of="$1" bs=16 count=1 conv=notrunc oflag=sync status=none
}

# write_exception DEV CHUNK_SECTORS AREA_CHUNK INDEX OLD NEW: one exception
# record in the metadata area at chunk AREA_CHUNK.
write_exception() {
	{ le64 "$5"; le64 "$6"; } > "$TMP/record"
	dd if="$TMP/record" of="$1" bs=16 seek=$(($3 * $2 * 32 + $4)) count=1 conv=notrunc oflag=sync status=none
}

SNAP_MAGIC=$((0x70416e53))

# cow_sum DEV: a checksum of the whole device.
cow_sum() {
	md5sum < "$1" | cut -d' ' -f1
}

# expect_line FILE LINE MESSAGE: FILE has a line that is exactly LINE.
expect_line() {
	grep -qxF -- "$2" "$1" || fail "$3"
}

# expect_text FILE TEXT MESSAGE: FILE has a line containing TEXT.
expect_text() {
	grep -qF -- "$2" "$1" || fail "$3"
}
