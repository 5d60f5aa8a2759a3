#!/usr/bin/env bash
# The device-machine check for the GPU path, in one call: build, run the GPU tests (GPU vs CPU
# on fresh random inputs, timings), and save the output under benches/results/.
# Usage on the device machine: bash benches/gpu/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-benches/results}
mkdir -p "$out"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '_' || echo unknown)
log="$out/gpu-check-${card}.txt"
{
  echo "# augserve GPU check: $(date -u +%F) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
  cargo test --release -p augserve-cuda --test gpu --test host_arithmetic --test nvrtc_compile -- --nocapture --test-threads=1 2>&1
  cargo run --release -q -- run --epochs 1 --batch-size 256 --quiet 2>&1
} | tee "$log"
echo "saved $log"
