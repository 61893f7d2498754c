#!/usr/bin/env bash
# Fetch Debian's linux-source-7.3 (trixie-backports) with an apt
# configuration of our own, leaving the system's sources untouched.
# Prints the path of the source tarball. Idempotent.
. "$(dirname "$0")/lib.sh"

APT_DIR=$CACHE_DIR/apt
DEB_DIR=$CACHE_DIR/debs
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/archives/partial" "$DEB_DIR"
cat > "$APT_DIR/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
SRC
APT_OPTS=(
	-o "Dir::Etc::SourceList=$APT_DIR/sources.list"
	-o "Dir::Etc::SourceParts=/dev/null"
	-o "Dir::State::Lists=$APT_DIR/lists"
	-o "Dir::Cache=$APT_DIR"
	-o "Dir::Cache::archives=$APT_DIR/archives"
	-o "APT::Architecture=amd64"
	-o "Debug::NoLocking=1"
	-o "APT::Sandbox::User=root"
)

deb=$(ls "$DEB_DIR"/${KSRC_PKG}_*.deb 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$deb" ]; then
	log "apt-get update (trixie-backports, private lists)"
	apt-get "${APT_OPTS[@]}" update -q >&2
	log "apt-get download $KSRC_PKG"
	(cd "$DEB_DIR" && apt-get "${APT_OPTS[@]}" download "$KSRC_PKG" >&2)
	deb=$(ls "$DEB_DIR"/${KSRC_PKG}_*.deb | sort -V | tail -n1)
fi

ver=$(dpkg-deb -f "$deb" Version)
case "$ver" in
	"$KSRC_MIN_VERSION".*) ;;
	*) die "$deb has version $ver, expected $KSRC_MIN_VERSION.x" ;;
esac

TAR_DIR=$CACHE_DIR/source-$ver
tarball=$TAR_DIR/usr/src/${KSRC_PKG}.tar.xz
if [ ! -f "$tarball" ]; then
	log "unpacking $deb"
	rm -rf "$TAR_DIR.tmp" && mkdir -p "$TAR_DIR.tmp"
	dpkg-deb -x "$deb" "$TAR_DIR.tmp"
	rm -rf "$TAR_DIR" && mv "$TAR_DIR.tmp" "$TAR_DIR"
fi
log "kernel source: $KSRC_PKG $ver"
echo "$tarball"
