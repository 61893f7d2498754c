#!/usr/bin/env bash
# Benchmark, not a test (scripts/bench.sh runs it): our store (ours), the C
# store (c) and the transient store N (n, the floor: the same dm-snapshot
# path with no metadata) in one boot. Every workload runs 1 + R rounds,
# the first a warm-up the report discards; inside a round the stores take
# turns in an order that rotates from round to round.
#
# Devices: two brd disks (origin /dev/ram0, COW /dev/ram1), each seen
# through a dm device so that the COW's own I/O counters give the bytes
# written: dm-linear for the CPU-bound view ("brd"), dm-delay adding D ms to
# every read and write for a disk-like view ("delay").
#
# Workloads (w1..w5, DMSNAP_BENCH_ONLY="w1 w3" runs some of them):
#   w1  random 4 KiB direct writes to the origin of a fresh snapshot, qd 1
#       and 16, chunks 4, 16, 64 and 512 KiB: writes/s, and metadata bytes
#       written per exception (COW sectors written less the exceptions'
#       data chunks)
#   w2  activation (dmsetup create) of a COW holding A exceptions written by
#       snap_restore, 4 KiB chunks, on brd and behind D and D2 ms: seconds
#   w3  merge of M exceptions (snapshot-merge until done): seconds
#   w4  random 4 KiB direct reads through the snapshot of chunks held in the
#       COW, qd 1 and 16: reads/s
#   w5  kernel memory per active snapshot at 64 and 512 KiB chunks, K new
#       snapshots of one origin: MemFree, Slab and VmallocUsed deltas
#   w6  random 4 KiB direct writes to an origin with four snapshots (4 KiB
#       chunks, each on its own part of the COW disk), qd 16: writes/s
# Records go to $DMSNAP_BENCH_RAW (default $DMSNAP_RESULTS/bench-raw.csv),
# one per line:
#   workload,view,case,metric,store,round,value
#   DMSNAP_BENCH_ROUNDS (R, default 3), DMSNAP_BENCH_DELAY_MS (D, default 1),
#   DMSNAP_BENCH_W2_DELAY_MS (D2, default 20: w2's second delayed view),
#   DMSNAP_BENCH_SMOKE=1 (tiny sizes, w1 at 512 KiB chunks and qd 16 only,
#   w5 at 512 KiB only, one round and no warm-up), DMSNAP_BENCH_ONLY,
#   DMSNAP_BENCH_PROFILE=1 (w2's activations on brd run under perf record,
#   system-wide; the profiles, by symbol, go to
#   $DMSNAP_RESULTS/w2-STORE-rROUND.profile)
# timeout: 7200
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/compat-lib.sh"

TOOLS=$(snap_tools release)
crash_bin crash_workload
modprobe dm-delay || fail "no dm-delay module"
command -v fio > /dev/null || fail "no fio"

R=${DMSNAP_BENCH_ROUNDS:-3}
D=${DMSNAP_BENCH_DELAY_MS:-1}
D2=${DMSNAP_BENCH_W2_DELAY_MS:-20}
ONLY=${DMSNAP_BENCH_ONLY:-w1 w2 w3 w4 w5 w6}
# R0: the first round; 0 is the warm-up.
if [ "${DMSNAP_BENCH_SMOKE:-0}" = 1 ]; then
	# Every path once, no warm-up: the script must not rot, nothing more.
	R=1 R0=1 W1_CHUNKS=512 W1_QDS=16 W5_CHUNKS=512
	W1_N=(100 50) A=3000 M=(1000 200) W4_FILL=300 W4_N=(100 50) K=2 W6_N=(100 50)
else
	# (brd, delay) pairs: a delayed run costs milliseconds per I/O.
	R0=0 W1_CHUNKS="4 16 64 512" W1_QDS="1 16" W5_CHUNKS="64 512"
	W1_N=(10000 1000) A=1000000 M=(100000 2000) W4_FILL=20000 W4_N=(20000 3000) K=16
	W6_N=(10000 1000)
fi
ORIGIN_KIB=$((256 * 1024))	# the region w1 writes and w4 reads
RAW=${DMSNAP_BENCH_RAW:-$DMSNAP_RESULTS/bench-raw.csv}
STORES=(ours c n)
DISK_KIB=$((4400 * 1024))	# sparse: brd allocates a page when it is written

note "rounds 1 + $R, delay $D ms, workloads: $ONLY"
note "guest: $(nproc) CPUs, $(($(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo) / 1024)) MiB"

# run last first: the devices, our module, dm-snapshot, the disks
on_exit "rmmod brd"
on_exit "rmmod dm_snapshot"
on_exit "rmmod dm_snap_persistent"
dm_remove_all_on_exit
if [ -d /sys/module/brd ]; then rmmod brd; fi
modprobe brd rd_nr=2 rd_size=$DISK_KIB max_part=0

# rec WORKLOAD CASE METRIC STORE ROUND VALUE (the view is $VIEW)
rec() {
	echo "$1,$VIEW,$2,$3,$4,$5,$6" >> "$RAW"
	echo "bench: $1 $VIEW $2: $3 $4 round $5: $6"
}

# stores_of ROUND: the stores in this round's order.
stores_of() {
	local r=$1 i n=${#STORES[@]}
	for ((i = 0; i < n; i++)); do echo "${STORES[$(((i + r) % n))]}"; done
}

# serve STORE: the store that serves P tables (N needs none of ours, either
# will do). Modules are switched without on_exit entries of their own (one
# cleanup at the end unloads them).
serve() {
	local want=N
	[ "$1" = c ] && want=Y
	if [ -d /sys/module/dm_snapshot ] && [ "$(cat /sys/module/dm_snapshot/parameters/persistent_store)" != "$want" ]; then
		if [ -d /sys/module/dm_snap_persistent ]; then rmmod dm_snap_persistent; fi
		rmmod dm_snapshot
	fi
	if [ ! -d /sys/module/dm_snapshot ]; then
		modprobe dm-snapshot persistent_store=$([ "$want" = Y ] && echo 1 || echo 0)
	fi
	if [ "$want" = N ] && [ ! -d /sys/module/dm_snap_persistent ]; then
		modprobe dm-bufio
		insmod "$MODULE_KO"
	fi
}
type_of() { if [ "$1" = n ]; then echo N; else echo P; fi; }

# view brd|delay [MS]: /dev/mapper/bo (origin) and /dev/mapper/bc (COW)
# over the two disks; the delay is D ms unless MS is given.
view() {
	VIEW=$1
	local ms=${2:-$D}
	dmsetup remove_all --force
	local name dev t
	for name in bo bc; do
		dev=/dev/ram0
		[ "$name" = bc ] && dev=/dev/ram1
		case "$VIEW" in
		brd) t="linear $dev 0" ;;
		delay) t="delay $dev 0 $ms" ;;
		esac
		dmsetup create "$name" --table "0 $(sectors "$dev") $t"
	done
	COW_STAT=/sys/block/$(dmsetup info -c --noheadings -o blkdevname bc | tr -d ' ')/stat
}

# sectors_written: of the COW device, so far
sectors_written() {
	local s
	read -ra s < "$COW_STAT"
	echo "${s[6]}"
}

# fio_run RW QD COUNT DEV KIB: COUNT random 4 KiB direct I/Os over the first
# KIB of DEV (same offsets for every store); prints the I/Os per second.
fio_run() {
	local out f=49
	[ "$1" = randread ] && f=8
	out=$(fio --name=bench --filename="$4" --rw="$1" --bs=4k --direct=1 --ioengine=libaio \
		--iodepth="$2" --number_ios="$3" --size="$5"k --randrepeat=1 --randseed=7 \
		--norandommap --minimal --terse-version=3) || fail "fio $* failed"
	echo "$out" | cut -d';' -f"$f"
}

# each_view_round RUN N_BRD N_DELAY: RUN STORE ROUND N on brd, then behind
# the delay, every round with the stores in turn; N is the count of I/Os
# for that view.
each_view_round() {
	local run=$1 v n r s
	for v in brd delay; do
		view "$v"
		n=$2
		[ "$v" = delay ] && n=$3
		for ((r = R0; r <= R; r++)); do
			for s in $(stores_of "$r"); do "$run" "$s" "$r" "$n"; done
		done
	done
}

# zero_header CHUNK_KIB: a COW that holds no store (its first chunk zeroed).
zero_header() {
	dd if=/dev/zero of=/dev/mapper/bc bs="$1"K count=1 oflag=direct status=none
}

# --- w1: random writes to the origin of a fresh snapshot
w1_run() {
	local store=$1 round=$2 ck=$3 qd=$4 n=$5 cs=$(($3 * 2)) w0 w1 st a m ex iops
	serve "$store"
	zero_header "$ck"
	dmsetup create so --table "$(origin_table /dev/mapper/bo)"
	dmsetup create ss --table "$(snapshot_table /dev/mapper/bo /dev/mapper/bc "$(type_of "$store")" "$cs")"
	w0=$(sectors_written)
	iops=$(fio_run randwrite "$qd" "$n" /dev/mapper/so "$ORIGIN_KIB")
	w1=$(sectors_written)
	st=$(snapshot_status ss)
	a=${st%%/*} m=${st##* }
	ex=$(((a - m) / cs))
	[ "$ex" -gt 0 ] || fail "w1: no exceptions after $n writes: $st"
	rec w1 "chunk ${ck}K qd $qd" writes/s "$store" "$round" "$iops"
	rec w1 "chunk ${ck}K qd $qd" "metadata B/exception" "$store" "$round" \
		"$(echo "scale=1; (($w1 - $w0) * 512 - $ex * $ck * 1024) / $ex" | bc)"
	dmsetup remove ss so
}
w1() {
	local v i r s ck qd
	for v in brd delay; do
		view "$v"
		i=0
		[ "$v" = delay ] && i=1
		for ck in $W1_CHUNKS; do
			for qd in $W1_QDS; do
				for ((r = R0; r <= R; r++)); do
					for s in $(stores_of "$r"); do w1_run "$s" "$r" "$ck" "$qd" "${W1_N[$i]}"; done
				done
			done
		done
	done
}

# --- w2: activation of a store of A exceptions
w2() {
	local v ms label r s t0 t1 st want
	view brd
	"$BIN/crash_workload" permutation-dump "$A" 256 7919 "$(sectors /dev/mapper/bc)" > "$TMP/w2.xml" ||
		fail "crash_workload permutation-dump failed"
	"$TOOLS/snap_restore" -q --force -i "$TMP/w2.xml" -o /dev/mapper/bc || fail "snap_restore failed"
	rm "$TMP/w2.xml"
	# brd, delay D ms, and delay D2 ms: under TCG a metadata area costs
	# the activation about 0.6 ms of CPU, which hides a 1 ms read behind
	# the area being scanned even at C's twelve areas in flight; D2 is the
	# delay at which reads, not the emulated CPU, bound the activation.
	local views=(brd "delay $D")
	[ "$D2" != "$D" ] && views+=("delay $D2")
	for v in "${views[@]}"; do
		ms=${v#delay }
		label="$A exceptions"
		[ "$v" != brd ] && [ "$ms" != "$D" ] && label="$A exceptions; $ms ms reads"
		view "${v%% *}" "$ms"
		for ((r = R0; r <= R; r++)); do
			for s in $(stores_of "$r"); do
				[ "$s" = n ] && continue
				serve "$s"
				local perf=()
				[ "${DMSNAP_BENCH_PROFILE:-0}" = 1 ] && [ "$v" = brd ] &&
					perf=(perf record -q -a -g -F 997 -o "$TMP/w2.perf" --)
				t0=$(date +%s%N)
				"${perf[@]}" "$BIN/crash_workload" dm create sa "0 $(sectors /dev/mapper/bo) snapshot /dev/mapper/bo /dev/mapper/bc P 8" > /dev/null ||
					fail "w2: activation failed"
				t1=$(date +%s%N)
				if [ ${#perf[@]} -gt 0 ]; then
					perf report -q -i "$TMP/w2.perf" --kallsyms=/proc/kallsyms --stdio --no-children --sort dso,sym -g none --percent-limit 0.3 \
						> "$DMSNAP_RESULTS/w2-$s-r$r.profile" 2>/dev/null || fail "w2: perf report failed"
					rm -f "$TMP/w2.perf"
				fi
				st=$(snapshot_status sa)
				# allocated - metadata = the exceptions' chunks
				want=$((A * 8))
				[ $((${st%%/*} - ${st##* })) -eq "$want" ] || fail "w2: $s store loaded $st, not $A exceptions"
				rec w2 "$label" seconds "$s" "$r" "$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc)"
				dmsetup remove sa
			done
		done
	done
}

# --- w3: merge of M exceptions
w3() {
	local v i r s t0 t1 n
	for v in brd delay; do
		view "$v"
		i=0
		[ "$v" = delay ] && i=1
		n=${M[$i]}
		"$BIN/crash_workload" permutation-dump "$n" 256 7919 "$(sectors /dev/mapper/bc)" > "$TMP/w3.xml" ||
			fail "crash_workload permutation-dump failed"
		for ((r = R0; r <= R; r++)); do
			for s in $(stores_of "$r"); do
				[ "$s" = n ] && continue
				serve "$s"
				"$TOOLS/snap_restore" -q --force -i "$TMP/w3.xml" -o /dev/mapper/bc || fail "snap_restore failed"
				dmsetup create mo --table "$(origin_table /dev/mapper/bo)"
				dmsetup suspend mo
				dmsetup reload mo --table "0 $(sectors /dev/mapper/bo) snapshot-merge /dev/mapper/bo /dev/mapper/bc P 8"
				t0=$(date +%s%N)
				dmsetup resume mo
				"$BIN/crash_workload" dm wait-merged mo > /dev/null || fail "w3: the merge did not end"
				t1=$(date +%s%N)
				rec w3 "$n exceptions" seconds "$s" "$r" "$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc)"
				dmsetup remove mo
			done
		done
		rm "$TMP/w3.xml"
	done
}

# --- w4: reads through the snapshot of chunks held in the COW
w4_run() {
	local store=$1 round=$2 n=$3 qd st
	serve "$store"
	zero_header 4
	dmsetup create so --table "$(origin_table /dev/mapper/bo)"
	dmsetup create ss --table "$(snapshot_table /dev/mapper/bo /dev/mapper/bc "$(type_of "$store")" 8)"
	# one write per chunk: W4_FILL exceptions
	fio --name=fill --filename=/dev/mapper/so --rw=write --bs=4k --direct=1 --ioengine=libaio \
		--iodepth=16 --size=$((W4_FILL * 4))k --minimal > /dev/null || fail "w4: fio fill failed"
	st=$(snapshot_status ss)
	[ $((${st%%/*} - ${st##* })) -eq $((W4_FILL * 8)) ] || fail "w4: $store store holds $st after $W4_FILL writes"
	for qd in 1 16; do
		rec w4 "qd $qd" reads/s "$store" "$round" "$(fio_run randread "$qd" "$n" /dev/mapper/ss $((W4_FILL * 4)))"
	done
	dmsetup remove ss so
}
w4() { each_view_round w4_run "${W4_N[@]}"; }

# --- w5: kernel memory per active snapshot
# cow_slices K SECTORS KIB: /dev/mapper/c0 .. c<K-1>, consecutive parts of
# SECTORS sectors of the COW disk, each holding no store (its first KIB
# zeroed).
cow_slices() {
	local k
	for ((k = 0; k < $1; k++)); do
		dmsetup create "c$k" --table "0 $2 linear /dev/mapper/bc $((k * $2))"
		dd if=/dev/zero of="/dev/mapper/c$k" bs="$3"K count=1 oflag=direct status=none
	done
}
meminfo() { sed -n "s/^$1: *\([0-9]*\).*/\1/p" /proc/meminfo; }
mem_now() {
	sync
	echo 3 > /proc/sys/vm/drop_caches
	sleep 1
	echo "$(meminfo MemFree) $(($(meminfo SReclaimable) + $(meminfo SUnreclaim))) $(meminfo VmallocUsed)"
}
w5_run() {
	local store=$1 round=$2 ck=$3 cs=$(($3 * 2)) k b a slice=$((64 * 2048))
	serve "$store"
	# brd allocates the pages the new store writes now, not while measuring
	cow_slices "$K" "$slice" $((ck * 2))
	read -ra b <<< "$(mem_now)"
	for ((k = 0; k < K; k++)); do
		dmsetup create "s$k" --table "$(snapshot_table /dev/mapper/bo "/dev/mapper/c$k" "$(type_of "$store")" "$cs")"
	done
	read -ra a <<< "$(mem_now)"
	rec w5 "chunk ${ck}K" "KiB used (MemFree)" "$store" "$round" $(((b[0] - a[0]) / K))
	rec w5 "chunk ${ck}K" "KiB slab" "$store" "$round" $(((a[1] - b[1]) / K))
	rec w5 "chunk ${ck}K" "KiB vmalloc" "$store" "$round" $(((a[2] - b[2]) / K))
	for ((k = 0; k < K; k++)); do dmsetup remove "s$k" "c$k"; done
}
w5() {
	local r s ck
	view brd
	for ck in $W5_CHUNKS; do
		for ((r = R0; r <= R; r++)); do
			for s in $(stores_of "$r"); do w5_run "$s" "$r" "$ck"; done
		done
	done
}

# --- w6: random writes to an origin with four snapshots
W6_SNAPS=4
w6_run() {
	local store=$1 round=$2 n=$3 k iops slice=$((512 * 2048))
	serve "$store"
	cow_slices "$W6_SNAPS" "$slice" 4
	dmsetup create so --table "$(origin_table /dev/mapper/bo)"
	for ((k = 0; k < W6_SNAPS; k++)); do
		dmsetup create "s$k" --table "$(snapshot_table /dev/mapper/bo "/dev/mapper/c$k" "$(type_of "$store")" 8)"
	done
	iops=$(fio_run randwrite 16 "$n" /dev/mapper/so "$ORIGIN_KIB")
	for ((k = 0; k < W6_SNAPS; k++)); do
		[ "$(snapshot_status "s$k")" != Invalid ] || fail "w6: snapshot $k invalid"
	done
	rec w6 "$W6_SNAPS snapshots; chunk 4K qd 16" writes/s "$store" "$round" "$iops"
	for ((k = 0; k < W6_SNAPS; k++)); do dmsetup remove "s$k"; done
	dmsetup remove so
	for ((k = 0; k < W6_SNAPS; k++)); do dmsetup remove "c$k"; done
}
w6() { each_view_round w6_run "${W6_N[@]}"; }

: > "$RAW"
for w in $ONLY; do
	case "$w" in
	w1 | w2 | w3 | w4 | w5 | w6) ;;
	*) fail "unknown workload $w" ;;
	esac
	t0=$(date +%s)
	"$w"
	note "$w took $(($(date +%s) - t0)) s"
done
