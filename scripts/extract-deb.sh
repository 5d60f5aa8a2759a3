#!/usr/bin/env bash
# Downloads Debian package PACKAGE (apt-get download: no root, nothing installed) and unpacks
# its files under DIR. Shared by the fetch-*.sh scripts.
set -euo pipefail
pkg=${1:?usage: extract-deb.sh PACKAGE DIR}
dir=$(realpath -m "${2:?usage: extract-deb.sh PACKAGE DIR}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download "$pkg" >/dev/null 2>&1; then
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get download "$pkg" >/dev/null 2>&1
fi
mkdir -p "$dir"
dpkg -x "$pkg"_*.deb "$dir"
