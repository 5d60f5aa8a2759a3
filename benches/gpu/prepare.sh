#!/usr/bin/env bash
# Run HERE (no GPU needed) before the device call: builds everything the device machine needs
# into target/gpu-kit (the device image has CUDA, PyTorch and torchvision but no Rust):
# the stripped release binary, the GPU test binaries, a 500-image benchmark corpus.
# Then, with the device tool: run(command="bash benches/gpu/run.sh", carry=["target/gpu-kit"],
# timeout_s=540). The run takes under 8 minutes and writes benches/results/gpu-<card>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
kit=target/gpu-kit
rm -rf "$kit" && mkdir -p "$kit/tests"
cargo build --release --locked --quiet
cp target/release/augserve "$kit/augserve"
cargo test --release --locked --no-run -p augserve-cuda --message-format=json 2>/dev/null \
  | python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
' "$kit/tests"
strip "$kit/augserve" "$kit"/tests/*
python3 benches/make_corpus.py --out "$kit/corpus" --images 500 >/dev/null
# The decoder test files, where the kit's test binaries find them (AUGSERVE_JPEG_TESTDATA).
cp -r testdata/jpeg "$kit/testdata"
# The Python client's gRPC stubs need these versions; the device image may hold older ones.
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$kit/wheels" grpcio==1.85.1 protobuf==7.35.1
# The benchmark pipeline (as benches/cpu_compare.sh and torchvision_peer.py).
printf '[color]\nbrightness = 0.4\ncontrast = 0.4\n\n[mix]\nmixup_alpha = 0.2\n\n[output]\ndtype = "float16"\nlayout = "nchw"\n' > "$kit/spec.toml"
du -sh "$kit"
