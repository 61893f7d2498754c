#!/usr/bin/env bash
# With dm-snapshot loaded without its C store and our module installed (but
# not loaded) under /lib/modules/$(uname -r)/extra with depmod run, a P table
# makes dm-snapshot request "dm-exstore-P", which modprobe resolves to our
# module through its alias: the module loads by itself (with dm-bufio), the
# snapshot works, and after cleanup the module unloads and the installed
# copy is removed again (the alias no longer resolves).
# timeout: 180
# cost: 21
. "$DMSNAP_HARNESS/lib.sh"
. "$DMSNAP_HARNESS/failure-lib.sh"

kver=$(uname -r)
moddir=/lib/modules/$kver
note "modules directory: $moddir ($(findmnt -n -o FSTYPE,OPTIONS -T "$moddir" 2>/dev/null || echo '?'))"
[ -d "$moddir" ] || skip "no $moddir in the guest"
[ ! -d /sys/module/dm_snap_persistent ] || rmmod dm_snap_persistent

# virtme-ng overlays /lib, but mounts /lib/modules/$(uname -r) read-only from
# the kernel build (9p): lay a tmpfs-backed overlay over it then (the host is
# never written; the overlay goes away at exit).
if ! { mkdir -p "$moddir/extra" && touch "$moddir/extra/.probe"; } 2>/dev/null; then
	note "$moddir is read-only: mounting an overlay over it"
	mkdir -p "$TMP/ovl" && mount -t tmpfs none "$TMP/ovl"
	mkdir -p "$TMP/ovl/upper" "$TMP/ovl/work"
	mount -t overlay overlay -o "lowerdir=$moddir,upperdir=$TMP/ovl/upper,workdir=$TMP/ovl/work" "$moddir" ||
		skip "cannot make $moddir writable"
	on_exit "umount $TMP/ovl"
	on_exit "umount $moddir"
	mkdir -p "$moddir/extra"
else
	rm -f "$moddir/extra/.probe"
fi
for f in modules.dep modules.dep.bin modules.alias modules.alias.bin modules.symbols modules.symbols.bin; do
	[ -f "$moddir/$f" ] && cp -a "$moddir/$f" "$TMP/$f.orig"
done
restore_depmod() {
	rm -f "$moddir/extra/dm_snap_persistent.ko"
	rmdir "$moddir/extra" 2>/dev/null
	local f
	for f in "$TMP"/*.orig; do
		[ -f "$f" ] && cp -a "$f" "$moddir/$(basename "$f" .orig)"
	done
	depmod -a 2>/dev/null
}
on_exit restore_depmod
cp "$MODULE_KO" "$moddir/extra/dm_snap_persistent.ko"
depmod -a
note "modprobe resolves the alias to: $(modprobe -R dm-exstore-P 2>&1)"
expect_eq "alias resolution" dm_snap_persistent "$(modprobe -R dm-exstore-P)"
note "kernel modprobe helper: $(cat /proc/sys/kernel/modprobe)"

load_dm_snapshot none
[ ! -d /sys/module/dm_snap_persistent ] || fail "our module is loaded before the P table asks for it"
on_exit "rmmod dm_snap_persistent"

make_pattern "$TMP/orig" 64
make_pattern "$TMP/new" 4
make_ram_disks 2 64
dm_remove_all_on_exit
write_at /dev/ram0 "$TMP/orig" 0
kmsg_mark
dmsetup create snap --table "$(snapshot_table /dev/ram0 /dev/ram1 P 8)" ||
	{ kmsg_since >&2; fail "the P table was refused: the module did not autoload"; }
kmsg_since
[ -d /sys/module/dm_snap_persistent ] || fail "/sys/module/dm_snap_persistent does not exist after the P table"
[ -d /sys/module/dm_bufio ] || fail "dm-bufio was not loaded along with our module"
expect_eq "table" "0 128 snapshot 1:0 1:1 P 8" "$(dmsetup table snap)"
dmsetup create base --table "$(origin_table /dev/ram0)"
write_at /dev/mapper/base "$TMP/new" 0
expect_eq "status after a 4 KiB write" "24/128 16" "$(snapshot_status snap)"
same_data "snapshot" /dev/mapper/snap 0 "$TMP/orig"
same_data "origin" /dev/mapper/base 0 "$TMP/new"

dmsetup remove snap
dmsetup remove base
rmmod dm_snap_persistent
[ ! -d /sys/module/dm_snap_persistent ] || fail "the module is still loaded after rmmod"
restore_depmod
[ ! -e "$moddir/extra/dm_snap_persistent.ko" ] || fail "the installed copy is still there"
expect_fail "alias still resolves after cleanup" modprobe -R dm-exstore-P
