#!/usr/bin/env bash
# Our module carries its name, the aliases dm-snapshot asks for, a
# description and the GPL license, and loads and unloads cleanly.
# timeout: 60
# cost: 7
. "$DMSNAP_HARNESS/lib.sh"

[ -f "$MODULE_KO" ] || fail "$MODULE_KO not built"
expect_eq "modinfo name" dm_snap_persistent "$(modinfo -F name "$MODULE_KO")"
expect_eq "modinfo license" GPL "$(modinfo -F license "$MODULE_KO")"
expect_eq "modinfo aliases" "dm-exstore-P dm-exstore-persistent" \
	"$(modinfo -F alias "$MODULE_KO" | sort | xargs)"
[ -n "$(modinfo -F description "$MODULE_KO")" ] || fail "modinfo has no description"

expect_eq "modinfo depends" "dm-bufio,dm-snapshot" \
	"$(modinfo -F depends "$MODULE_KO" | tr ',' '\n' | sort | paste -sd, -)"

# insmod does not load dependencies: dm-snapshot without its C store (ours
# registers the same type names), and dm-bufio.
load_dm_snapshot none
modprobe dm-bufio
insmod "$MODULE_KO"
on_exit "rmmod dm_snap_persistent"
[ -d /sys/module/dm_snap_persistent ] || fail "module not in /sys/module after insmod"
rmmod dm_snap_persistent
[ ! -d /sys/module/dm_snap_persistent ] || fail "module still loaded after rmmod"
