#!/usr/bin/env bash
# Build snap_check, snap_dump and snap_restore and install them with their
# man pages (section 8):
#   scripts/install-tools.sh [PREFIX]     (default /usr/local)
# installs PREFIX/sbin/snap_{check,dump,restore} and
# PREFIX/share/man/man8/snap_{check,dump,restore}.8. DESTDIR is honoured
# for packaging.
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${1:-/usr/local}
DEST=${DESTDIR:-}
(cd "$TOP" && cargo build --release --locked -p dm-snap-tools)
install -d "$DEST$PREFIX/sbin" "$DEST$PREFIX/share/man/man8"
for tool in snap_check snap_dump snap_restore; do
	install -m 0755 "$TOP/target/release/$tool" "$DEST$PREFIX/sbin/$tool"
	install -m 0644 "$TOP/tools/man/$tool.8" "$DEST$PREFIX/share/man/man8/$tool.8"
done
echo "installed snap_check, snap_dump, snap_restore and their man pages under $DEST$PREFIX"
