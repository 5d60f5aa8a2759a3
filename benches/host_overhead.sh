#!/usr/bin/env bash
# The GPU path's host CPU time per GPU-decoded image, measured without a GPU:
#   benches/host_overhead.sh [BASELINE_REV]     (REPEATS=3, EPOCHS=10, SHORT_EPOCHS=2; MACHINE names
#                                                the folder; BASELINE_BIN: a binary already built
#                                                from BASELINE_REV)
# `augserve run --device stand-in` runs the whole pipeline with the GPU backend's host side on
# host memory and no-op kernels and nvJPEG (crates/augserve-cuda/src/stand_in.rs): every image
# the GPU would decode is read, header-parsed and drawn for on the CPU, and each batch's host
# plan and uploads from pageable memory run as on a GPU (the output is written into registered
# output slots, as a GPU downloads into them, so nothing is copied out of pinned memory). The figure
# is the process's CPU time (user + system, all threads, getrusage) over the images it
# delivered. Each configuration also runs for SHORT_EPOCHS, so the one-time costs (start-up,
# registering the output buffers) separate from the steady per-image cost:
#   steady = (cpu(EPOCHS) - cpu(SHORT_EPOCHS)) / (images(EPOCHS) - images(SHORT_EPOCHS)),
#   one-time = cpu(SHORT_EPOCHS) - steady * images(SHORT_EPOCHS).
# With BASELINE_REV, that revision is built too (a git worktree under target/) and
# both binaries run interleaved on the same corpora, so the ratio comes from one run.
# Writes benches/results/<machine>/host-overhead.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=${1:-}
repeats=${REPEATS:-3}
epochs=${EPOCHS:-10}
short=${SHORT_EPOCHS:-2}
cores=$(nproc)
machine=${MACHINE:-$(hostname)-${cores}c}
venv=target/pyenv
work=target/host-overhead
out=benches/results/$machine
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check Pillow
tools=$(scripts/fetch-build-tools.sh target/tools "$venv")
PATH="$tools:$PATH"
export PATH
echo "== building"
cargo build --release --locked --quiet -p augserve
rm -rf "$work" && mkdir -p "$work" "$out"
cp target/release/augserve "$work/augserve-current"
current="$(git rev-parse --short HEAD)$(git status --porcelain --untracked-files=no | grep -q . && echo '+changes' || true)"
bins=(current)
if [ -n "$baseline" ] && [ -n "${BASELINE_BIN:-}" ]; then
  cp "$BASELINE_BIN" "$work/augserve-baseline"
  bins=(baseline current)
elif [ -n "$baseline" ]; then
  echo "== building the baseline $baseline"
  tree=target/host-overhead-baseline
  git worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
  git worktree add --detach "$tree" "$baseline" >/dev/null
  (cd "$tree" && CARGO_TARGET_DIR="$PWD/../host-overhead-baseline-target" cargo build --release --locked --quiet -p augserve)
  cp target/host-overhead-baseline-target/release/augserve "$work/augserve-baseline"
  git worktree remove --force "$tree"
  bins=(baseline current)
fi
"$venv/bin/python" benches/make_corpus.py --out target/bench-corpus-1000 --images 1000 >/dev/null
"$venv/bin/python" benches/make_corpus.py --out target/bench-large-300 --kind large --images 300 >/dev/null

# The benchmarks' recipe (benches/cpu_compare.sh): crop 224, flip, brightness; uint8 HWC, and
# float16 NCHW normalised with mixup.
printf '[color]\nbrightness = 0.4\n\n[output]\ndtype = "uint8"\nlayout = "nhwc"\n' > "$work/uint8.toml"
printf '[color]\nbrightness = 0.4\n\n[mix]\nmixup_alpha = 0.2\n\n[output]\ndtype = "float16"\nlayout = "nchw"\n' > "$work/float16.toml"

for r in $(seq "$repeats"); do
  for corpus in imagenet large; do
    dir=target/bench-corpus-1000; [ "$corpus" = large ] && dir=target/bench-large-300
    for mode in uint8 float16; do
      for t in 1 "$cores"; do
        for b in "${bins[@]}"; do
          for e in "$epochs" "$short"; do
            echo "== run $r: $corpus $mode, $t threads, $e epochs, $b"
            "$work/augserve-$b" run --data "$dir" --spec "$work/$mode.toml" --device stand-in \
              --threads "$t" --batch-size 256 --epochs "$e" --quiet \
              --summary-json "$work/$b-$corpus-$mode-$t-$r-$e.json" >/dev/null
          done
        done
      done
    done
  done
done

"$venv/bin/python" - "$work" "$out" "$current" "$baseline" "$machine" "$epochs" "$short" <<'PY'
import json, pathlib, platform, statistics, subprocess, sys, datetime
work, out, current, baseline, machine, epochs, short = sys.argv[1:]
work, out = pathlib.Path(work), pathlib.Path(out)
runs = {}
for f in sorted(work.glob("*.json")):
    b, corpus, mode, t, r, e = f.stem.split("-")
    s = json.loads(f.read_text())
    runs[(corpus, mode, int(t), b, r, e)] = (s["host_cpu_s"], s["images"], s["host_cpu_us_per_image"])
rows, steady, once = {}, {}, {}
for (corpus, mode, t, b, r, e), (cpu_s, images, per) in runs.items():
    if e != epochs:
        continue
    key = (corpus, mode, t)
    rows.setdefault(key, {}).setdefault(b, []).append(per)
    cpu_short, images_short, _ = runs[(corpus, mode, t, b, r, short)]
    marginal = (cpu_s - cpu_short) / (images - images_short)
    steady.setdefault(key, {}).setdefault(b, []).append(marginal * 1e6)
    once.setdefault(key, {}).setdefault(b, []).append(cpu_short - marginal * images_short)
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
result = {"machine": machine, "cpu": cpu, "date": datetime.date.today().isoformat(),
          "commit": current, "baseline": baseline or None, "limit_us_per_image": 50,
          "epochs": int(epochs), "short_epochs": int(short), "rows": []}
lines = [f"# The GPU path's host CPU time per GPU-decoded image (stand-in device)", "",
         f"Machine: {machine} ({cpu}); commit {current}" + (f", baseline {baseline}" if baseline else "")
         + f"; {datetime.date.today()}. `benches/host_overhead.sh`: medians of the runs, µs of",
         f"process CPU time (all threads) per image delivered; batch 256, crop 224. `{epochs} epochs`:",
         "the whole process over that run, one-time costs included. `steady`: the cost of one more",
         f"image, (cpu({epochs} epochs) - cpu({short} epochs)) / (images({epochs}) - images({short}));",
         "`one-time`: the CPU seconds the run spends whatever its length (start-up, registering the",
         "output buffers).", "",
         "| corpus | output | threads | " + (f"baseline {baseline}: {epochs} epochs / steady / one-time | " if baseline else "")
         + f"now: {epochs} epochs / steady / one-time | limit |",
         "|---|---|---|" + ("---|" if baseline else "") + "---|---|"]
for key, by in sorted(rows.items()):
    corpus, mode, t = key
    med = {b: statistics.median(v) for b, v in by.items()}
    st = {b: statistics.median(v) for b, v in steady[key].items()}
    on = {b: statistics.median(v) for b, v in once[key].items()}
    result["rows"].append({"corpus": corpus, "output": mode, "threads": t,
                           "us_per_image": med, "steady_us_per_image": st, "one_time_cpu_s": on,
                           "runs": by, "steady_runs": steady[key]})
    cell = lambda b: f"{med[b]:.1f} / {st[b]:.1f} / {on[b]:.2f} s"
    base = f"{cell('baseline')} | " if "baseline" in med else ""
    lines.append(f"| {corpus} | {mode} | {t} | {base}{cell('current')} | 50 |")
(out / "host-overhead.json").write_text(json.dumps(result, indent=1) + "\n")
(out / "host-overhead.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
