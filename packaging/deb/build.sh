#!/usr/bin/env bash
# Builds the atrest Debian package for bookworm (amd64, or DEB_ARCH=arm64)
# with dpkg-deb from the tree `make install` lays out (PREFIX=/usr), and
# prints its path.
# `make deb` runs it; docs/operations.md says why dpkg-deb and not
# debhelper. Usage: build.sh OUTDIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:?usage: build.sh OUTDIR}
# DEB_ARCH=arm64 cross-builds: `make install` runs the host's atrest to
# write the manual page and completions, then the programs are replaced
# by the target's.
host=$(dpkg --print-architecture)
arch=${DEB_ARCH:-$host}
case $arch in
  amd64 | arm64) ;;
  *) echo "build.sh: DEB_ARCH=$arch: only amd64 and arm64 are built" >&2; exit 1 ;;
esac
maintainer=${DEB_MAINTAINER:-atrest maintainers <atrest-maintainers@users.noreply.github.com>}
version=${DEB_VERSION:-$("$here/version.sh")}
describe=$(git -C "$repo" describe --tags --always --dirty)
# Reproducible: every timestamp is the commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct)}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
umask 022

make -s -C "$repo" install BINDIR="$work/bin" DESTDIR="$root" PREFIX=/usr UNITDIR=/usr/lib/systemd/system \
  ZSHDIR=/usr/share/zsh/vendor-completions VERSION="$version" >&2
if [ "$arch" != "$host" ]; then
  make -s -C "$repo" build BINDIR="$work/$arch" VERSION="$version" GO="env GOARCH=$arch go" >&2
  install -m 0755 "$work/$arch/atrest" "$work/$arch/atrestd" "$root/usr/sbin/"
fi
gzip -9n "$root"/usr/share/man/man8/*.8
install -D -m 0600 "$here/atrest.yaml" "$root/etc/atrest/atrest.yaml"
chmod 0700 "$root/etc/atrest"
install -d -m 0700 "$root/var/lib/atrest"
install -D -m 0644 "$here/copyright" "$root/usr/share/doc/atrest/copyright"
install -D -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/atrest"
{
  printf 'atrest (%s) bookworm; urgency=medium\n\n' "$version"
  printf '  * Built from git %s (https://github.com/atrest/atrest).\n\n' "$describe"
  printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$root/usr/share/doc/atrest/changelog.gz"
chmod 0644 "$root/usr/share/doc/atrest/changelog.gz"

install -d -m 0755 "$root/DEBIAN"
for f in postinst prerm postrm; do install -m 0755 "$here/$f" "$root/DEBIAN/$f"; done
install -m 0644 "$here/conffiles" "$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
  LC_ALL=C sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"
# Installed-Size as dpkg-gencontrol counts it: KiB per file, one per
# directory or link.
size=$(cd "$root" && find . -path ./DEBIAN -prune -o ! -name . -printf '%y %s\n' |
  awk '{ n += ($1 == "f") ? int(($2 + 1023) / 1024) : 1 } END { print n }')
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
  -e "s|@SIZE@|$size|" "$here/control" > "$root/DEBIAN/control"
chmod 0644 "$root/DEBIAN/control"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$out"
deb="$out/atrest_${version}_$arch.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
