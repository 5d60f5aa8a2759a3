#!/usr/bin/env bash
# The whole CPU comparison, one command, on a fresh machine:
#   benches/cpu_compare.sh      (IMAGES=1000 ImageNet-size, LARGE_IMAGES=300 large photos, REPEATS=3,
#                                LONG_EPOCHS=4 for augserve's steady rate;
#                                MACHINE names the results folder)
# Builds the release binary, cuts two corpora from real photographs (ImageNet-size, and large
# photos with long side 1200-2400), installs the peers (OpenCV, simplejpeg, Pillow, torchvision,
# NVIDIA DALI's CPU-only pipeline; benches/requirements.txt) and the Python client into the
# project's venv (target/pyenv, shared with the tests) from PyPI, then measures side by side:
# for each corpus and output (uint8 HWC crops; float16 NCHW normalised + mixup), every peer and
# `augserve run`, on one core (everything pinned with taskset) and on all cores, REPEATS times
# interleaved (medians reported). Then `augserve bench` (stages, chart) and the service-level
# comparison on the ImageNet-size corpus. Writes benches/results/<machine>/summary.md (ratios
# first), peers.png and the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
images=${IMAGES:-1000}
large_images=${LARGE_IMAGES:-300}
repeats=${REPEATS:-3}
long_epochs=${LONG_EPOCHS:-4}
cores=$(nproc)
machine=${MACHINE:-$(hostname)-${cores}c}
venv=target/pyenv
work=target/bench-run
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
echo "== installing the peers and the Python client into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r benches/requirements.txt ./clients/python
echo "== building"
# cmake and nasm build libjpeg-turbo (augserve's and decoder_candidates'): fetched without root.
tools=$(scripts/fetch-build-tools.sh target/tools "$venv")
PATH="$tools:$PATH"
export PATH
cargo build --release --locked --quiet
rm -rf "$work" && mkdir -p "$work"
# The commit the measured binary was built from (and whether the tree differed from it).
{ git rev-parse --short HEAD; git status --porcelain --untracked-files=no | head -5; } > "$work/build.txt"
"$venv/bin/python" benches/make_corpus.py --out "target/bench-corpus-$images" --images "$images" >/dev/null
"$venv/bin/python" benches/make_corpus.py --out "target/bench-large-$large_images" --kind large \
  --images "$large_images" >/dev/null
cp "target/bench-corpus-$images/manifest.json" "$work/imagenet-manifest.json"
cp "target/bench-large-$large_images/manifest.json" "$work/large-manifest.json"

# The peers' pipeline: RandomResizedCrop 224, flip 0.5, brightness 0.4; float16 adds mixup 0.2
# and ImageNet normalisation (augserve's defaults for what is not written here).
cat > "$work/uint8.toml" <<'TOML'
[color]
brightness = 0.4

[output]
dtype = "uint8"
layout = "nhwc"
TOML
cat > "$work/float16.toml" <<'TOML'
[color]
brightness = 0.4

[mix]
mixup_alpha = 0.2

[output]
dtype = "float16"
layout = "nchw"
TOML

# The same with the spec's dct_scaling (augserve's second row).
for mode in uint8 float16; do
  { echo "dct_scaling = true"; cat "$work/$mode.toml"; } > "$work/$mode-dct.toml"
done

one_corpus() { # name dir
  local name=$1 dir=$2
  for mode in uint8 float16; do
    for r in $(seq "$repeats"); do
      echo "== $name $mode, run $r of $repeats"
      taskset -c 0 "$venv/bin/python" benches/peers.py --corpus "$dir" --mode "$mode" --procs 1 \
        --out "$work/$name-$mode-peers-1-$r.json" 2> >(grep -v -i warning >&2)
      "$venv/bin/python" benches/peers.py --corpus "$dir" --mode "$mode" --procs "$cores" \
        --out "$work/$name-$mode-peers-$cores-$r.json" 2> >(grep -v -i warning >&2)
      # augserve runs for 1 and for $LONG_EPOCHS epochs (files from the page cache); the steady
      # rate is the difference of the two, (images(long) - images(1)) / (secs(long) - secs(1)):
      # start-up, the pipeline's fill and drain and first-use buffer growth cancel out, as the
      # peers are timed after their warm-up. The long run's own rate is kept beside it.
      for t in 1 "$cores"; do
        pin=(); [ "$t" = 1 ] && pin=(taskset -c 0)
        for ours in augserve augserve_dct; do
          spec="$work/$mode.toml"; [ "$ours" = augserve_dct ] && spec="$work/$mode-dct.toml"
          for e in 1 "$long_epochs"; do
            "${pin[@]}" ./target/release/augserve run --data "$dir" --spec "$spec" --threads "$t" \
              --batch-size 256 --epochs "$e" --quiet --summary-json "$work/$name-$mode-$ours-$t-$r-e$e.json" 2>/dev/null |
              grep '^total'
          done
        done
      done
      # The pipeline's decoder decoding the same images whole, one core, right after each
      # repeat of augserve's one-core runs: the "pipeline / decode alone" ratio compares the
      # medians of runs taken side by side (one decode run was noisier than the pipeline's
      # three: 1045 to 1316 images/s on the same VM on one day).
      if [ "$name" = imagenet ] && [ "$mode" = uint8 ]; then
        taskset -c 0 benches/decoder_candidates/target/release/decoder-candidates "$dir" \
          "$work/imagenet-decoders-$r.json" >/dev/null
      fi
    done
  done
}

# Decoder candidates for decoding only the crop. libjpeg-turbo 3 is built from source: cmake
# (PyPI) and nasm (Debian's package, unpacked) come from scripts/fetch-build-tools.sh, no root.
cargo build --release --locked --quiet --manifest-path benches/decoder_candidates/Cargo.toml
one_corpus imagenet "target/bench-corpus-$images"
one_corpus large "target/bench-large-$large_images"

echo "== decoder candidates (one core)"
for name in imagenet large; do
  dir="target/bench-corpus-$images"; [ "$name" = large ] && dir="target/bench-large-$large_images"
  taskset -c 0 benches/decoder_candidates/target/release/decoder-candidates "$dir" "$work/$name-decoders.json"
done

echo "== augserve bench (ImageNet-size corpus)"
./target/release/augserve bench --data "target/bench-corpus-$images" --batches 4 --threads "1,$cores" \
  --batch-sizes 64,256 --out-dir "$work/bench"
echo "== service level (ImageNet-size corpus)"
"$venv/bin/python" benches/service_compare.py --corpus "target/bench-corpus-$images" --spec "$work/float16.toml" \
  --threads "$cores" --out "$work/service.json"
"$venv/bin/python" benches/summarize.py --work "$work" --cores "$cores" --repeats "$repeats" --out "benches/results/$machine" \
  --long-epochs "$long_epochs"
