#!/usr/bin/env bash
# Where the GPU paths spend their time, in one device call (~1 minute), from the kit that
# benches/gpu/prepare.sh built: nvJPEG per stage and output format, the GPU batch ops' host
# and device steps, and the mean of every step over the batches of `augserve bench` and
# `augserve run` (their per-batch `augserve_cuda::timing` debug lines).
# Results: benches/results/gpu-<card>/profile.txt (and $OUT/profile.txt).
set -uo pipefail
cd "$(dirname "$0")/../.."
kit=target/gpu-kit
[ -x "$kit/augserve" ] || { echo "no $kit: run benches/gpu/prepare.sh first"; exit 2; }
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' || echo unknown)
res=benches/results/gpu-${card:-unknown}
mkdir -p "$res"
export AUGSERVE_JPEG_TESTDATA=$PWD/$kit/testdata AUGSERVE_BENCH_CORPUS=$PWD/$kit/corpus
# Mean of each key=value over the timing lines on stdin, per kind of batch.
mean() {
  python3 -c '
import re, sys, collections
groups = collections.defaultdict(list)
for line in sys.stdin:
    if "gpu batch:" not in line:
        continue
    kv = dict((k, float(v)) for k, v in re.findall(r"(\w+)=([0-9.]+)", line.split("gpu batch:", 1)[1]))
    groups["with nvJPEG" if "nvjpeg" in kv else "host-decoded"].append(kv)
for name, rows in groups.items():
    keys = list(rows[0])
    print(f"  {name}, {len(rows)} batches, mean ms: " + " ".join(f"{k}={sum(r.get(k, 0) for r in rows) / len(rows):.2f}" for k in keys))
'
}
{
  echo "# augserve GPU profile: $(date -u +%F) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null); CPU x $(nproc)"
  echo "## tests: nvJPEG stage times, GPU batch timings"
  timeout 120 "$kit/tests/gpu" --nocapture --test-threads=1 nvjpeg_stage_times gpu_timings 2>&1 | grep -v '^$'
  for threads in 1 0; do
    echo "## augserve bench --devices gpu --threads $threads (GPU batch ops, then GPU decoding)"
    AUGSERVE_LOG=warn,augserve_cuda::timing=debug timeout 120 "$kit/augserve" bench --data "$kit/corpus" --quiet \
      --batches 8 --threads "$threads" --batch-sizes 256 --devices gpu --out-dir /tmp/profile-bench 2>&1 \
      | tee /tmp/profile-bench.log | grep -E "^(device|cpu|gpu)" | grep -v "decodes"
    mean < /tmp/profile-bench.log
  done
  for dev in gpu gpu-decode; do
    flags="--device gpu"; [ "$dev" = gpu-decode ] && flags="$flags --gpu-decode"
    echo "## augserve run $flags (all cores, 8 epochs)"
    # shellcheck disable=SC2086
    AUGSERVE_LOG=warn,augserve_cuda::timing=debug timeout 90 "$kit/augserve" run --data "$kit/corpus" --spec "$kit/spec.toml" \
      $flags --batch-size 256 --epochs 8 --quiet 2>&1 | tee /tmp/profile-run.log | grep -E "^(total|stages)"
    mean < /tmp/profile-run.log
  done
  echo "## tools on the machine: $(command -v nsys ncu perf py-spy 2>/dev/null | tr '\n' ' ')"
} 2>&1 | tee "$res/profile.txt"
[ -n "${OUT:-}" ] && cp "$res/profile.txt" "$OUT/"
echo "saved $res/profile.txt"
