# Sourced by tests/guest/crash-replay-*.sh after lib.sh.
# shellcheck shell=bash
# Crash replay with dm-log-writes (Documentation/crash-model.md). The origin
# and the COW device of a snapshot are two slices of one log-writes device,
# so one log orders every write to both; crash_workload issues tagged 4 KiB
# O_DIRECT writes and marks each acknowledgement in the log; crash_replay
# then rebuilds both devices at every crash point of the log on a scratch
# pair, activates a plain snapshot over them and checks it against what was
# acknowledged. Workloads, each with the C store and ours: random origin
# writes at 4, 64 and 512 KiB chunks at queue depth 1 and 16, the same on
# devices with 4 KiB logical blocks, writes through the snapshot, a merge, a
# P overflow that invalidates, a reload halfway, and a new store on a COW
# device holding stale metadata, crashed at every entry before its first
# commit. Ours must lose nothing anywhere; the C store's losses are
# reported, named by point, without failing the test. A self-test replays
# one log without one commit's metadata write and must report the loss.
# Each replay also judges the log's subset states (any subset of the writes
# not yet made durable at each flush, FUA write and acknowledgement, the
# CrashMonkey model) at the format level, and loads a seeded sample of them
# in the kernel; its line "crash-subsets STORE/LABEL: N states, M lost" is
# summed per store into $TMP/STORE.subsets-total. A second self-test treats
# one commit as a plain write in that model and must report a loss.
# The two stores are two tests (crash-replay-c.sh, crash-replay-ours.sh),
# so that the harness can run them in two guests side by side.
. "$DMSNAP_HARNESS/compat-lib.sh"

crash_bin crash_replay crash_workload
modprobe dm-log-writes || skip "no dm-log-writes module"
modprobe loop || skip "no loop module"

MEM=$TMP/mem
mkdir -p "$MEM"
mount -t tmpfs -o size=96m none "$MEM"
on_exit "umount $MEM"

OLEN=$((2 << 20)) # origin bytes
OS=$((OLEN / 512))
LOOPS=()

# dmc COMMAND...: device-mapper commands through crash_workload's ioctl
# client: one small binary instead of dmsetup for each of the test's many
# device-mapper commands.
dmc() {
	"$BIN/crash_workload" dm "$@"
}

# create NAME TABLE: a dm device; prints its devtmpfs node (/dev/mapper
# links come and go with udev's events of earlier devices of that name).
create() {
	dmc create "$1" "$2"
}

# devices BLOCK_BYTES COW_BYTES: fresh devices for one workload: the
# log-writes device crash-lw over DATA (log on LOG) cut into the origin O
# and the COW device C, and the replay's two scratch pairs SO/SC and
# SO2/SC2 on SCRATCH (crash_replay loads each point's table over the pair
# the live one does not use).
devices() {
	local bs=$1 lw
	COW_LEN=$2
	T0=$(date +%s)
	make_ram_disks 3 65536
	LOG=/dev/ram1
	if [ "$bs" = 4096 ]; then
		truncate -s 32M "$MEM/data.img" "$MEM/scratch.img"
		DATA=$(losetup --sector-size 4096 -f --show "$MEM/data.img")
		SCRATCH=$(losetup --sector-size 4096 -f --show "$MEM/scratch.img")
		LOOPS=("$DATA" "$SCRATCH")
	else
		DATA=/dev/ram0
		SCRATCH=/dev/ram2
		LOOPS=()
	fi
	lw=$(create crash-lw "0 $(sectors "$DATA") log-writes $DATA $LOG")
	O=$(create crash-o "0 $OS linear $lw 0")
	C=$(create crash-c "0 $((COW_LEN / 512)) linear $lw $OS")
	SO=$(create crash-so "0 $OS linear $SCRATCH 0")
	SC=$(create crash-sc "0 $((COW_LEN / 512)) linear $SCRATCH $OS")
	SO2=$(create crash-so2 "0 $OS linear $SCRATCH $((OS + COW_LEN / 512))")
	SC2=$(create crash-sc2 "0 $((COW_LEN / 512)) linear $SCRATCH $((2 * OS + COW_LEN / 512))")
}

# setup_done: the origin's pattern, flushed, then the mark the oracle
# starts at.
setup_done() {
	"$BIN/crash_workload" fill "$O"
	"$BIN/crash_workload" mark crash-lw setup-done
}

# snapshot CHUNK_SECTORS: the snapshot under test (SNAP) and its origin (ORIG).
snapshot() {
	SNAP=$(create crash-snap "0 $OS snapshot $O $C P $1")
	ORIG=$(create crash-origin "0 $OS snapshot-origin $O")
}

# writes WHERE COUNT QD SEED FIRST_ID: WHERE is origin, snapshot or both.
writes() {
	local o=- s=-
	case "$1" in
	origin) o=$ORIG ;;
	snapshot) s=$SNAP ;;
	both) o=$ORIG s=$SNAP ;;
	esac
	"$BIN/crash_workload" write crash-lw "$o" "$s" "$2" "$3" "$4" "$5" "$OLEN"
}

# replay LABEL CHUNK_SECTORS [crash_replay options]: tear the workload's
# devices down (the log-writes target logs what it still held) and replay
# the log; the summary lines go to $TMP/$STORE.sum (crash points) and
# $TMP/$STORE.subsets (subset states).
replay() {
	local label=$1 chunk=$2 rc=0 t1
	shift 2
	case "$(dmc status crash-lw)" in
	*logging_disabled*) fail "$label: the log-writes device stopped logging (log device full?)" ;;
	esac
	dmc remove crash-origin crash-snap crash-o crash-c crash-lw
	t1=$(date +%s)
	"$BIN/crash_replay" --log "$LOG" --origin-len "$OLEN" --cow-len "$COW_LEN" --chunk "$chunk" \
		--scratch-origin "$SO,$SO2" --scratch-cow "$SC,$SC2" --label "$STORE/$label" "$@" > "$TMP/replay.out" || rc=$?
	cat "$TMP/replay.out"
	[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || fail "crash_replay $label could not run (status $rc)"
	grep '^crash-replay ' "$TMP/replay.out" >> "$TMP/$STORE.sum"
	grep '^crash-subsets ' "$TMP/replay.out" >> "$TMP/$STORE.subsets" ||
		fail "crash_replay $label printed no crash-subsets line"
	if [ "$STORE" = ours ] && [ "$label" = origin-4k-qd1 ]; then
		# The oracle's self-test: the same log without one commit's
		# metadata write must lose data.
		rc=0
		"$BIN/crash_replay" --log "$LOG" --origin-len "$OLEN" --cow-len "$COW_LEN" --chunk "$chunk" \
			--scratch-origin "$SO,$SO2" --scratch-cow "$SC,$SC2" --label self-test --drop-commit 3 \
			--subsets off --stop-after-lost 1 > "$TMP/self-test.result" || rc=$?
		echo "rc=$rc" >> "$TMP/self-test.result"
		cat "$TMP/self-test.result"
		# The subset model's: the same log with that commit taken as a
		# plain write (the disk may lose it) must lose data.
		rc=0
		"$BIN/crash_replay" --log "$LOG" --origin-len "$OLEN" --cow-len "$COW_LEN" --chunk "$chunk" \
			--scratch-origin "$SO,$SO2" --scratch-cow "$SC,$SC2" --label subset-self-test \
			--points none --plain-commit 3 --subset-kernel 0 \
			--stop-after-lost 1 > "$TMP/subset-self-test.result" || rc=$?
		echo "rc=$rc" >> "$TMP/subset-self-test.result"
		cat "$TMP/subset-self-test.result"
	fi
	echo "    ($label: $(($(date +%s) - T0)) s in all, replay $(($(date +%s) - t1)) s)"
}

teardown() {
	dmc remove crash-so crash-sc crash-so2 crash-sc2
	local l
	for l in "${LOOPS[@]}"; do losetup -d "$l"; done
	rm -f "$MEM"/*.img
	rmmod brd
}

# origin_workload LABEL BLOCK CHUNK_SECTORS QD COUNT COW_BYTES SEED
origin_workload() {
	devices "$2" "$6"
	setup_done
	snapshot "$3"
	writes origin "$5" "$4" "$7" 1
	replay "$1" "$3"
	teardown
}

run_store() {
	STORE=$1
	local t0
	t0=$(date +%s)
	: > "$TMP/$STORE.sum"
	: > "$TMP/$STORE.subsets"
	dm_remove_all_on_exit
	#               label            block chunk qd count cow-bytes seed
	origin_workload origin-4k-qd1    512   8     1  28    $((1 << 20)) 11
	origin_workload origin-4k-qd16   512   8     16 56    $((1 << 20)) 12
	origin_workload origin-64k-qd1   512   128   1  28    $((3 << 20)) 13
	origin_workload origin-64k-qd16  512   128   16 56    $((4 << 20)) 14
	origin_workload origin-512k-qd1  512   1024  1  16    $((4 << 20)) 15
	origin_workload origin-512k-qd16 512   1024  16 32    $((4 << 20)) 16
	origin_workload 4kn-4k-qd16      4096  8     16 56    $((1 << 20)) 17
	origin_workload 4kn-64k-qd1      4096  128   1  28    $((3 << 20)) 18

	note "$STORE: writes through the snapshot and to the origin"
	devices 512 $((1 << 20))
	setup_done
	snapshot 16
	writes both 56 16 21 1
	replay snapshot-writes 16
	teardown

	note "$STORE: merge"
	devices 512 $((1 << 20))
	setup_done
	snapshot 16
	writes both 28 8 22 1
	dmc suspend crash-origin
	dmc remove crash-snap
	"$BIN/crash_workload" mark crash-lw merge-start
	dmc reload crash-origin "0 $OS snapshot-merge $O $C P 16"
	dmc resume crash-origin
	note "merged: $(dmc wait-merged crash-origin)"
	replay merge 16 --points durable,mark-plus,torn,every --points-from merge-start
	teardown

	note "$STORE: P overflow"
	devices 512 $((64 << 10))
	setup_done
	snapshot 8
	writes origin 24 1 23 1
	note "status: $(dmc status crash-snap)"
	replay overflow 8
	teardown

	note "$STORE: reload halfway"
	devices 512 $((1 << 20))
	setup_done
	snapshot 16
	writes origin 16 4 24 1
	dmc remove crash-snap
	"$BIN/crash_workload" mark crash-lw reload
	SNAP=$(create crash-snap "0 $OS snapshot $O $C P 16")
	writes origin 16 4 24 17
	replay reload 16
	teardown

	note "$STORE: new store over stale metadata, every entry"
	devices 512 $((1 << 20))
	"$BIN/crash_workload" fill "$O"
	"$BIN/crash_workload" garbage "$C" 8 8
	"$BIN/crash_workload" mark crash-lw setup-done
	snapshot 8
	writes origin 3 1 25 1
	replay fresh-store 8 --points every
	teardown

	awk -v s="$STORE" '{ p += $3; l += $5; f += $7 } END { printf "crash-replay %s: %d points, %d lost, %d failed activations\n", s, p, l, f }' \
		"$TMP/$STORE.sum" > "$TMP/$STORE.total"
	awk -v s="$STORE" '{ n += $3; l += $5 } END { printf "crash-subsets %s: %d states, %d lost\n", s, n, l }' \
		"$TMP/$STORE.subsets" > "$TMP/$STORE.subsets-total"
	echo "$STORE: $(($(date +%s) - t0)) s"
}
