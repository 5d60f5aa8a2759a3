#!/usr/bin/env bash
# Extracts libjpeg-turbo's TurboJPEG library (Debian's libturbojpeg0 package) into DEST for
# the host test that decodes real files to native-resolution YCbCr planes, as nvJPEG does on
# the GPU (crates/augserve-cuda/tests/host_arithmetic/). Nothing is installed system-wide.
# Idempotent: does nothing when DEST already holds it.
set -euo pipefail
dest=$(realpath -m "${1:?usage: fetch-turbojpeg.sh DEST}")
if [ -f "$dest/libturbojpeg.so.0" ]; then exit 0; fi
x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
"$(dirname "$0")/extract-deb.sh" libturbojpeg0 "$x"
mkdir -p "$dest"
cp -L "$(find "$x" -name 'libturbojpeg.so.0' | head -1)" "$dest/libturbojpeg.so.0"
echo "turbojpeg: $dest/libturbojpeg.so.0"
