# Helpers for the failure-path guest tests (overflow, I/O errors, bad
# metadata, module life cycle). Source it after lib.sh:
#   . "$DMSNAP_HARNESS/lib.sh"
#   . "$DMSNAP_HARNESS/failure-lib.sh"
# shellcheck shell=bash

# kmsg_mark: put a fresh marker line in the kernel log; kmsg_since prints
# what the kernel logged after the latest marker.
_kmsg_mark=""
kmsg_mark() {
	_kmsg_mark="dmsnap-test: mark $$-$RANDOM-$RANDOM"
	echo "$_kmsg_mark" > /dev/kmsg
}
kmsg_since() {
	dmesg --notime | awk -v m="$_kmsg_mark" 'found { print } $0 == m { found = 1 }'
}

# dm_msgs: the device-mapper lines logged since kmsg_mark, with dm device
# numbers ("table: 253:3:") replaced by DEV, so that runs compare equal.
dm_msgs() {
	kmsg_since | grep '^device-mapper: ' | sed -E 's/(table|ioctl): [0-9]+:[0-9]+:/\1: DEV:/' || true
}

# expect_kmsg REGEX: a line logged since kmsg_mark matches REGEX.
expect_kmsg() {
	kmsg_since | grep -E -q -- "$1" || {
		kmsg_since >&2
		fail "kernel log since the mark has no line matching '$1'"
	}
}

# try_create NAME TABLE: create a dm device; prints "created" or "refused"
# (a refused create leaves no device behind).
try_create() {
	if command dmsetup create "$1" --table "$2" 2>/dev/null; then
		echo created
	else
		command dmsetup remove "$1" >/dev/null 2>&1 || true
		echo refused
	fi
}

# header_fields DEV: magic valid version chunk_size of the store header, as
# decimal numbers.
header_fields() {
	dd if="$1" bs=512 count=1 iflag=direct status=none | od -A n -t u4 -N 16 | tr -s ' ' | sed 's/^ //'
}

# ok_or_failed COMMAND...: runs COMMAND (its output discarded), prints "ok"
# or "failed".
ok_or_failed() {
	if "$@" >/dev/null 2>&1; then echo ok; else echo failed; fi
}

# our_store_serves: true when our module, not the C store, serves "P".
our_store_serves() {
	[ -d /sys/module/dm_snap_persistent ]
}
