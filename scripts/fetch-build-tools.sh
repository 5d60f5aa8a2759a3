#!/usr/bin/env bash
# Puts cmake (PyPI's wheel, into the venv VENV) and nasm (Debian's package, unpacked) under
# DEST/bin without root, for building libjpeg-turbo from source (turbojpeg-sys, which
# augserve-core links; benches/decoder_candidates).
# Prints the folder to put first on PATH. Idempotent.
#   scripts/fetch-build-tools.sh target/tools target/pyenv
set -euo pipefail
dest=$(realpath -m "${1:?usage: fetch-build-tools.sh DEST VENV}")
venv=$(realpath -m "${2:?usage: fetch-build-tools.sh DEST VENV}")
mkdir -p "$dest/bin"
if [ ! -x "$dest/bin/nasm" ]; then
  x=$(mktemp -d)
  trap 'rm -rf "$x"' EXIT
  "$(dirname "$0")/extract-deb.sh" nasm "$x"
  cp "$x/usr/bin/nasm" "$dest/bin/nasm"
fi
if [ ! -x "$dest/bin/cmake" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "cmake>=3.20" >&2
  ln -sf "$venv/bin/cmake" "$dest/bin/cmake"
fi
echo "$dest/bin"
