#!/usr/bin/env bash
# The GPU half of the benchmarks, in one device call (< 8 minutes on an H100), from the kit
# that benches/gpu/prepare.sh built: GPU-vs-CPU correctness tests on fresh random inputs,
# `augserve bench` with CPU and GPU rows, `augserve run` end to end on CPU and GPU batch ops,
# and the torchvision GPU peer on the same corpus. Results: benches/results/gpu-<card>/ (and
# a copy under $OUT when the device tool provides one).
set -uo pipefail
cd "$(dirname "$0")/../.."
kit=target/gpu-kit
[ -x "$kit/augserve" ] || { echo "no $kit: run benches/gpu/prepare.sh first"; exit 2; }
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' || echo unknown)
res=benches/results/gpu-${card:-unknown}
mkdir -p "$res"
# libnvrtc: the CUDA toolkit's, or the one PyTorch's wheels carry; cudarc looks for libnvrtc.so.
nvrtc=$(ls /usr/local/cuda/lib64/libnvrtc.so* 2>/dev/null | head -1)
[ -n "$nvrtc" ] || nvrtc=$(find / -name 'libnvrtc.so*' -not -name '*builtins*' 2>/dev/null | head -1)
mkdir -p /tmp/augserve-libs
[ -n "$nvrtc" ] && ln -sf "$nvrtc" /tmp/augserve-libs/libnvrtc.so && ln -sf "$(dirname "$nvrtc")"/libnvrtc-builtins.so* /tmp/augserve-libs/ 2>/dev/null
export LD_LIBRARY_PATH=/tmp/augserve-libs:$(dirname "${nvrtc:-/x}"):${LD_LIBRARY_PATH:-}
export AUGSERVE_LOG=warn
log=$res/run.txt
{
  echo "# augserve GPU run: $(date -u +%F) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
  echo "nvrtc: ${nvrtc:-not found}; CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) x $(nproc)"
  echo "## GPU vs CPU tests (fresh random inputs)"
  for t in "$kit"/tests/*; do timeout 120 "$t" --nocapture --test-threads=1 2>&1 | grep -v '^$'; done
  echo "## augserve bench"
  timeout 150 "$kit/augserve" bench --data "$kit/corpus" --quiet --batches 4 --threads 1,0 --batch-sizes 256 --out-dir "$res"
  echo "## augserve run end to end (all cores, batch 256, 2 epochs)"
  for dev in cpu gpu; do
    timeout 90 "$kit/augserve" run --data "$kit/corpus" --spec "$kit/spec.toml" --device "$dev" --batch-size 256 --epochs 2 --quiet \
      --summary-json "$res/run-$dev.json" && python3 -c "import json;d=json.load(open('$res/run-$dev.json'));print('$dev', round(d['images_per_s']), 'images/s')"
  done
  echo "## CUDA IPC delivery to a Python (CuPy) client, against inline"
  PYTHONPATH=clients/python/src AUGSERVE_BIN=$kit/augserve timeout 120 python3 -m pytest -q -rs -p no:cacheprovider \
    clients/python/tests/test_cuda_ipc.py
  echo "## torchvision peer"
  timeout 150 python3 benches/gpu/torchvision_peer.py --corpus "$kit/corpus" --out "$res/torchvision.json"
} 2>&1 | tee "$log"
[ -n "${OUT:-}" ] && cp -r "$res" "$OUT/"
echo "saved $res"
