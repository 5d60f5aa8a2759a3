#!/usr/bin/env bash
# Rebuilds vendor/h2 from crates.io's h2 VERSION plus our one patch (vendor/h2.patch), for an h2
# upgrade: `scripts/vendor-h2.sh 0.4.21`, then `cargo update -p h2` and the tests.
#
# Why the patch: gRPC clients built on grpc-core (grpcio, the C++ and Ruby clients) send the
# %-encoded socket path as :authority over a Unix socket (since 1.57), grpc-java the raw path,
# and a comma-separated list for a multi-address target. h2 resets such a stream with
# PROTOCOL_ERROR, so every call of a stock client fails with INTERNAL. The patch drops an
# authority that does not parse instead (hyperium/h2#487 proposes the same; not merged).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: scripts/vendor-h2.sh H2_VERSION}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src="$work/h2-$version"
scripts/fetch-crate.sh h2 "$version" "$src"
rm -rf vendor/h2
mkdir -p vendor/h2
cp -r "$src/src" "$src/LICENSE" "$src/README.md" vendor/h2/
# The library alone: no examples, benches or dev-dependencies (they would join our lockfile).
python3 - "$src/Cargo.toml" vendor/h2/Cargo.toml <<'PY'
import re, sys
text = open(sys.argv[1]).read()
sections = re.split(r'(?m)^(?=\[)', text)
keep = [s for s in sections if not re.match(r'\[\[(example|bench|test)\]\]|\[dev-dependencies', s)]
open(sys.argv[2], "w").write("".join(keep))
PY
patch -p1 --quiet < vendor/h2.patch
echo "vendor/h2 is h2 $version with vendor/h2.patch applied"
