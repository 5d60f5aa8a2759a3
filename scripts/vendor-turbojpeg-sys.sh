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
scripts/fetch-crate.sh turbojpeg-sys "$version" vendor/turbojpeg-sys
(cd vendor/turbojpeg-sys && patch -p1 --quiet < ../turbojpeg-sys.patch)
echo "vendor/turbojpeg-sys is turbojpeg-sys $version with vendor/turbojpeg-sys.patch applied"
