#!/usr/bin/env bash
# The whole CPU comparison, one command, on a fresh machine:
#   benches/cpu_compare.sh            (IMAGES=1000 by default; MACHINE names the results folder)
# Builds the release binary, cuts the benchmark corpus from real photographs, installs the peers
# (Pillow, OpenCV, simplejpeg) and the Python client into target/peersenv from PyPI, then runs in
# one go: the peers and `augserve run` (1 thread, all cores), `augserve bench` (stages, chart),
# and the service-level comparison (Rust/Python clients over UDS/TCP vs a DataLoader-style
# baseline). Writes benches/results/<machine>/summary.md (ratios first), bench.png and the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
images=${IMAGES:-1000}
cores=$(nproc)
machine=${MACHINE:-$(hostname)-${cores}c}
venv=target/peersenv
work=target/bench-run
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
echo "== installing peers and the Python client into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy Pillow opencv-python-headless simplejpeg ./clients/python
echo "== building"
cargo build --release --locked --quiet
corpus=target/bench-corpus-$images
echo "== corpus: $corpus"
"$venv/bin/python" benches/make_corpus.py --out "$corpus" --images "$images" >/dev/null
rm -rf "$work" && mkdir -p "$work"
cat > "$work/spec.toml" <<'TOML'
[color]
brightness = 0.4
contrast = 0.4

[mix]
mixup_alpha = 0.2

[output]
dtype = "float16"
layout = "nchw"
TOML
echo "== peers (1 process, $cores processes)"
"$venv/bin/python" benches/peers.py --corpus "$corpus" --procs "$cores" --out "$work/peers.json"
echo "== augserve run"
for t in 1 "$cores"; do
  # Two epochs; the second runs from the page cache like the peers' in-memory reads.
  ./target/release/augserve run --data "$corpus" --spec "$work/spec.toml" --threads "$t" \
    --batch-size 256 --epochs 2 --quiet --summary-json "$work/augserve-$t.json"
done
echo "== augserve bench"
./target/release/augserve bench --data "$corpus" --batches 4 --threads "1,$cores" --batch-sizes 64,256 \
  --out-dir "$work/bench"
echo "== service level"
"$venv/bin/python" benches/service_compare.py --corpus "$corpus" --spec "$work/spec.toml" --threads "$cores" \
  --out "$work/service.json"
"$venv/bin/python" benches/summarize.py --work "$work" --corpus "$corpus" --out "benches/results/$machine"
