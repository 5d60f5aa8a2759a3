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
# augserve finds libnvrtc/libnvjpeg (.so.13 or .so.12, whichever the driver runs) in the CUDA
# toolkit and Python environments itself (`augserve gpu` says where); folders elsewhere on
# the image are added to its search.
nvrtc=$(ls /usr/local/cuda/lib64/libnvrtc.so.1* 2>/dev/null | head -1)
[ -n "$nvrtc" ] || nvrtc=$(find / -name 'libnvrtc.so.1*' -not -path '/proc/*' 2>/dev/null | head -1)
nvjpeg=$(ls /usr/local/cuda/lib64/libnvjpeg.so.1* 2>/dev/null | head -1)
[ -n "$nvjpeg" ] || nvjpeg=$(find / -name 'libnvjpeg.so.1*' -not -path '/proc/*' 2>/dev/null | head -1)
export AUGSERVE_CUDA_LIB_DIRS=$(dirname "${nvrtc:-/x}"):$(dirname "${nvjpeg:-/x}")
export AUGSERVE_JPEG_TESTDATA=$PWD/$kit/testdata AUGSERVE_BENCH_CORPUS=$PWD/$kit/corpus
# The client's gRPC stubs need grpcio/protobuf as new as the kit's wheels.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/augserve-site "$kit"/wheels/*.whl \
  && export PYTHONPATH=/tmp/augserve-site
export AUGSERVE_LOG=warn
log=$res/run.txt
{
  echo "# augserve GPU run: $(date -u +%F) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
  echo "nvrtc: ${nvrtc:-not found}; nvjpeg: ${nvjpeg:-not found}; CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) x $(nproc)"
  echo "## augserve gpu (libraries found, device, nvJPEG start-up check)"
  timeout 60 "$kit/augserve" gpu 2>&1
  echo "## GPU vs CPU tests (fresh random inputs)"
  for t in "$kit"/tests/*; do echo "### $(basename "$t") ($SECONDS s)"; timeout 120 "$t" --nocapture --test-threads=1 2>&1 | grep -v '^$'; done
  echo "## augserve bench ($SECONDS s)"
  timeout 150 "$kit/augserve" bench --data "$kit/corpus" --quiet --batches 4 --threads 1,0 --batch-sizes 256 --out-dir "$res"
  echo "## augserve run end to end ($SECONDS s; all cores, batch 256, 8 epochs of the 500-image corpus)"
  for dev in cpu gpu gpu-decode; do
    flags="--device ${dev%-decode}"; [ "$dev" = gpu-decode ] && flags="$flags --gpu-decode"
    timeout 90 "$kit/augserve" run --data "$kit/corpus" --spec "$kit/spec.toml" $flags --batch-size 256 --epochs 8 --quiet \
      --summary-json "$res/run-$dev.json" && python3 -c "import json;d=json.load(open('$res/run-$dev.json'));print('$dev', round(d['images_per_s']), 'images/s')"
  done
  echo "## output digests (seed 3, 2 epochs): CPU and GPU batch ops should agree; GPU decoding with a fixed share should give one digest whatever the thread count"
  for cfg in "cpu|--device cpu --threads 0" "gpu|--device gpu --threads 0" "gpu-decode-share-0.5-threads-1|--device gpu --gpu-decode-share 0.5 --threads 1" "gpu-decode-share-0.5-threads-all|--device gpu --gpu-decode-share 0.5 --threads 0"; do
    # shellcheck disable=SC2086
    echo "digest ${cfg%%|*}: $(timeout 90 "$kit/augserve" run --data "$kit/corpus" --spec "$kit/spec.toml" ${cfg#*|} --batch-size 128 --epochs 2 --seed 3 --quiet --digest 2>&1 | grep -E '^output digest|^error' | tail -1)"
  done
  echo "## the server with GPU decoding (AUGSERVE_GPU_DECODE=1), pulled over gRPC ($SECONDS s)"
  AUGSERVE_LOG=info AUGSERVE_GPU_DECODE=1 AUGSERVE_TELEMETRY_LOG_INTERVAL_S=0 "$kit/augserve" serve --device gpu \
    --listen-tcp 127.0.0.1:50077 --dataset corpus="$kit/corpus" > /tmp/augserve-serve.log 2>&1 &
  spid=$!
  for _ in $(seq 100); do "$kit/augserve" health --addr 127.0.0.1:50077 >/dev/null 2>&1 && break; sleep 0.2; done
  timeout 90 "$kit/augserve" pull --addr 127.0.0.1:50077 --dataset corpus --spec "$kit/spec.toml" --batch-size 256 --epochs 4 --quiet
  kill -TERM $spid; wait $spid
  grep -E "nvJPEG|GPU decode|JPEG decoding|ERROR|WARN" /tmp/augserve-serve.log | cut -c1-400
  echo "## CUDA IPC delivery to a Python (CuPy) client, against inline"
  PYTHONPATH=clients/python/src:${PYTHONPATH:-} AUGSERVE_BIN=$kit/augserve timeout 120 python3 -m pytest -q -rs -p no:cacheprovider \
    clients/python/tests/test_cuda_ipc.py
  echo "## torchvision peer ($SECONDS s)"
  timeout 150 python3 benches/gpu/torchvision_peer.py --corpus "$kit/corpus" --out "$res/torchvision.json"
} 2>&1 | tee "$log"
# The lines issue 9's acceptance is read from (decoder agreement, start-up and ROI checks,
# crash corpus, decode and end-to-end rates, torchvision), with every test failure.
grep -E "^NVRTC|^nvJPEG|^GPU|^digest|mean abs diff|start-up check|ROI decode|per-image error|gpu-decode|GPU decode|nvJPEG|decode_jpeg|images/s|FAILED|panicked" "$log" \
  | grep -v '^epoch ' | cut -c1-400 > "$res/issue9-digest.txt"
echo "## digest ($res/issue9-digest.txt)"; cat "$res/issue9-digest.txt"
# The device tool returns at most 8 files: one archive, plus the log to read at once.
[ -n "${OUT:-}" ] && tar -C "$(dirname "$res")" -czf "$OUT/gpu-results.tgz" "$(basename "$res")" && cp "$log" "$res/issue9-digest.txt" "$OUT/"
echo "saved $res"
