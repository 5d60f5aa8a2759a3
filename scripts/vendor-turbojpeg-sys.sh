#!/usr/bin/env bash
# Rebuilds vendor/turbojpeg-sys from crates.io's turbojpeg-sys VERSION (which bundles the
# libjpeg-turbo source) plus our one patch (vendor/turbojpeg-sys.patch), for an upgrade:
# `scripts/vendor-turbojpeg-sys.sh 1.2.1`, then `cargo update -p turbojpeg-sys` and the tests
# (crates/augserve-core/tests/region_decode.rs fails if the patch is lost or wrong).
#
# Why the patch: libjpeg-turbo entropy-decodes every scan of a progressive JPEG over the whole
# image, whatever the cropping region; the patch stops each scan two iMCU rows below the
# region's last row (vendor/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: scripts/vendor-turbojpeg-sys.sh TURBOJPEG_SYS_VERSION}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/p/src"
printf '[package]\nname = "tj-fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nturbojpeg-sys = "=%s"\n[workspace]\n' "$version" > "$work/p/Cargo.toml"
: > "$work/p/src/lib.rs"
(cd "$work/p" && cargo vendor --quiet --versioned-dirs "$work/v" >/dev/null)
rm -rf vendor/turbojpeg-sys
cp -r "$work/v/turbojpeg-sys-$version" vendor/turbojpeg-sys
rm -f vendor/turbojpeg-sys/.cargo-checksum.json
(cd vendor/turbojpeg-sys && patch -p1 --quiet < ../turbojpeg-sys.patch)
echo "vendor/turbojpeg-sys is turbojpeg-sys $version with vendor/turbojpeg-sys.patch applied"
