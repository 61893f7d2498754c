#!/usr/bin/env bash
# lvm2 old-style snapshots on our store, with dm-snapshot's C store left out
# (then the same with the C store, which must give the same figures). A
# 64 MiB PV on /dev/ram0, VG "dmsnapvg", a 16 MiB LV, an 8 MiB snapshot of
# it (4 KiB chunks); 256 KiB written to the origin and 64 KiB to the
# snapshot: lvs shows the snapshot's Data% > 0 (same value as with C).
# Then two merges (the second with our store only):
# 1. origin active and not open: `lvconvert --merge` starts the merge at
#    once and polls it to the end; the snapshot LV is gone, the origin is
#    dm-linear again and holds the snapshot's data.
# 2. origin held open: the merge is deferred to the next activation; after
#    closing, deactivating and activating the origin the merge runs (lvm2
#    polls it in the background) and the origin ends with the snapshot's
#    data.
# lvm2 runs without udev, lvmetad, dmeventd and lvmpolld; VG and PV are
# removed at the end.
# timeout: 500
# cost: 79
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/compat-lib.sh"

command -v lvm >/dev/null || skip "no lvm2 in the guest"
LVMCONF='devices{obtain_device_list_from_udev=0 use_devicesfile=0 filter=["a|^/dev/ram0$|","r|.*|"]} activation{udev_sync=0 udev_rules=0 monitoring=0} global{use_lvmpolld=0} backup{backup=0 archive=0}'
export LVM_SUPPRESS_FD_WARNINGS=1
VG=dmsnapvg

lvmc() {
	local cmd=$1
	shift
	lvm "$cmd" --config "$LVMCONF" "$@"
}

# The same data for both stores.
make_pattern "$TMP/a" 1024
make_pattern "$TMP/b" 256
make_pattern "$TMP/c" 64

# lv_attrs: each LV of the VG with the first five characters of its
# attributes (type, permissions, allocation, fixed minor, state).
lv_attrs() {
	lvmc lvs --noheadings -o lv_name,lv_attr "$VG" | awk '{ printf "%s%s %s", sep, $1, substr($2, 1, 5); sep = ", " }'
}

data_percent() {
	lvmc lvs --noheadings -o data_percent "$VG/$1" | tr -d ' '
}

# make_snapshot: LV "lv" with data, snapshot "snap" with 256 KiB written to
# the origin and 64 KiB to the snapshot; prints what lvm2 shows.
make_snapshot() {
	lvmc lvcreate -q -y -L 16M -n lv "$VG" >&2
	write_at "/dev/mapper/$VG-lv" "$TMP/a" 0
	lvmc lvcreate -q -y -s -L 8M -c 4k -n snap "$VG/lv" >&2
	echo "fresh snapshot: Data% $(data_percent snap), status $(snapshot_status "$VG-snap")"
	write_at "/dev/mapper/$VG-lv" "$TMP/b" 512
	write_at "/dev/mapper/$VG-snap" "$TMP/c" 4096
	local d
	d=$(data_percent snap)
	echo "after writes: Data% $d, status $(snapshot_status "$VG-snap")"
	awk -v d="$d" 'BEGIN { exit !(d > 0) }' || fail "Data% of the snapshot is '$d'"
	same_data "origin LV" "/dev/mapper/$VG-lv" 512 "$TMP/b"
	cmp -s <(read_at "/dev/mapper/$VG-snap" 0 1024) "$TMP/a" || fail "the snapshot LV does not show the old data"
	same_data "snapshot LV" "/dev/mapper/$VG-snap" 4096 "$TMP/c"
}

# wait_snapshot_gone: lvm2 drops the snapshot LV when it has polled the
# merge to its end.
wait_snapshot_gone() {
	local i
	for ((i = 0; i < 150; i++)); do
		lvmc lvs --noheadings -o lv_name "$VG" | grep -q -w snap || return 0
		sleep 0.4
	done
	fail "the snapshot LV is still there after the merge: $(lvmc lvs -a "$VG" 2>&1)"
}

observe() {
	make_ram_disks 1 65536
	dm_remove_all_on_exit
	lvmc pvcreate -q -y /dev/ram0 >&2
	on_exit "lvm pvremove --config '$LVMCONF' -ff -y /dev/ram0"
	lvmc vgcreate -q -y "$VG" /dev/ram0 >&2
	on_exit "lvm vgremove --config '$LVMCONF' -ff -y $VG"
	local want

	note "merge 1: origin active, not open" >&2
	make_snapshot
	want=$(cow_sum "/dev/mapper/$VG-snap")
	lvmc lvconvert --merge -i 1 "$VG/snap" >&2
	wait_snapshot_gone
	# lv_attr's 6th character says whether the device is open, which udev
	# probing it at that moment can make true: compare the first five only.
	echo "after merge 1: $(lv_attrs)"
	echo "origin table: $(dmsetup table "$VG-lv" | cut -d' ' -f3)"
	expect_eq "origin after merge 1" "$want" "$(cow_sum "/dev/mapper/$VG-lv")"

	# The deferred merge with our store only (lvm2 is slow under TCG).
	if [ ! -d /sys/module/dm_snap_persistent ]; then
		lvmc lvremove -q -y "$VG/lv" >&2
		return 0
	fi
	note "merge 2: origin open, merged at the next activation" >&2
	lvmc lvremove -q -y "$VG/lv" >&2
	make_snapshot >&2
	want=$(cow_sum "/dev/mapper/$VG-snap")
	exec 9< "/dev/mapper/$VG-lv"
	lvmc lvconvert --merge -i 1 "$VG/snap" >&2
	expect_eq "origin table while the merge waits" snapshot-origin "$(dmsetup table "$VG-lv" | cut -d' ' -f3)"
	exec 9<&-
	lvmc lvchange -an "$VG/lv" >&2
	lvmc lvchange -ay "$VG/lv" >&2
	wait_snapshot_gone
	expect_eq "LVs after merge 2" "lv -wi-a" "$(lv_attrs)"
	expect_eq "origin table after merge 2" linear "$(dmsetup table "$VG-lv" | cut -d' ' -f3)"
	expect_eq "origin after merge 2" "$want" "$(cow_sum "/dev/mapper/$VG-lv")"
	lvmc lvremove -q -y "$VG/lv" >&2
}

# The C store, then ours without the C store: the same figures.
same_on_both_stores observe
