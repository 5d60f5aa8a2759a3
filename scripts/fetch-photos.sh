#!/usr/bin/env bash
# Extracts real photographs (Debian's mate-backgrounds package) into DEST for tests and
# benchmarks. Idempotent: does nothing when DEST already holds them.
set -euo pipefail
dest=$(realpath -m "${1:?usage: fetch-photos.sh DEST}")
if [ -f "$dest/.complete" ]; then exit 0; fi
x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
"$(dirname "$0")/extract-deb.sh" mate-backgrounds "$x"
mkdir -p "$dest"
# The nature/ folder holds real photographs (the others are mostly abstract renders).
cp "$x"/usr/share/backgrounds/mate/nature/*.jpg "$dest"/
touch "$dest/.complete"
echo "photos: $(ls "$dest"/*.jpg | wc -l) files in $dest"
