#!/usr/bin/env bash
# scripts/fetch-crate.sh NAME VERSION DEST: crates.io's NAME at VERSION, as published, unpacked
# into DEST (replaced), by `cargo vendor`. The vendoring scripts (vendor-*.sh) start from it.
set -euo pipefail
name=${1:?usage: scripts/fetch-crate.sh NAME VERSION DEST} version=${2:?} dest=${3:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/p/src"
printf '[package]\nname = "crate-fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n[workspace]\n' \
  "$name" "$version" > "$work/p/Cargo.toml"
: > "$work/p/src/lib.rs"
(cd "$work/p" && cargo vendor --quiet --versioned-dirs "$work/v" >/dev/null)
rm -rf "$dest"
cp -r "$work/v/$name-$version" "$dest"
rm -f "$dest/.cargo-checksum.json"
