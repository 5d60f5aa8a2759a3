#!/usr/bin/env bash
# CPU comparison, one command (work in progress towards issue 6): builds the release binary,
# cuts the benchmark corpus from real photographs, installs the peers (Pillow, OpenCV,
# simplejpeg) into target/peersenv, runs the same pipeline in each and in augserve on one core
# and on all cores, and writes benches/results/cpu-compare-<host>.md with the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
images=${IMAGES:-1000}
venv=target/peersenv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy Pillow opencv-python-headless simplejpeg
cargo build --release --locked --quiet
"$venv/bin/python" benches/make_corpus.py --out target/bench-corpus-$images --images "$images" >/dev/null
corpus=target/bench-corpus-$images
cores=$(nproc)
cat > target/bench-spec.toml <<'TOML'
[color]
brightness = 0.4
contrast = 0.4

[mix]
mixup_alpha = 0.2

[output]
dtype = "float16"
layout = "nchw"
TOML
"$venv/bin/python" benches/peers.py --corpus "$corpus" --procs "$cores" --out target/peers.json
declare -A aug
for t in 1 "$cores"; do
  # Two epochs; the second runs from the page cache like the peers' in-memory reads.
  ./target/release/augserve run --data "$corpus" --spec target/bench-spec.toml --threads "$t" \
    --batch-size 256 --epochs 2 --summary-json "target/augserve-$t.json" >/dev/null 2>&1
  aug[$t]=$("$venv/bin/python" -c "import json,sys; print(json.load(open('target/augserve-$t.json'))['images_per_s'])")
  echo "augserve   $t thread(s): ${aug[$t]} images/s"
done
"$venv/bin/python" - "$corpus" "$cores" "${aug[1]}" "${aug[$cores]}" <<'PY'
import json, pathlib, platform, subprocess, sys, time
corpus, cores, a1, an = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
peers = json.load(open("target/peers.json"))["images_per_s"]
manifest = json.load(open(pathlib.Path(corpus) / "manifest.json"))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
host = platform.node()
rows = ["| peer | 1 core: peer images/s | augserve/peer | all cores: peer images/s | augserve/peer |", "| --- | ---: | ---: | ---: | ---: |"]
for lib in ("opencv", "pillow", "simplejpeg"):
    p1, pn = peers.get(f"{lib}/1"), peers.get(f"{lib}/{cores}")
    if p1 and pn:
        rows.append(f"| {lib} | {p1:.0f} | **{a1 / p1:.2f}x** | {pn:.0f} | **{an / pn:.2f}x** |")
out = pathlib.Path(f"benches/results/cpu-compare-{host}.md")
out.write_text("\n".join([
    f"# CPU pipeline: augserve vs OpenCV, Pillow, simplejpeg",
    "",
    f"Machine: {cpu}, {cores} cores, no GPU. Date: {time.strftime('%Y-%m-%d')}. Commit: {commit}.",
    f"Corpus: {manifest['images']} JPEGs, {manifest['source']}; mean {manifest['mean_size'][0]}x{manifest['mean_size'][1]}, "
    f"q{manifest['quality_range'][0]}-{manifest['quality_range'][1]}, {manifest['subsampling_420_fraction']*100:.0f} % 4:2:0, "
    f"{manifest['progressive_fraction']*100:.0f} % progressive (benches/make_corpus.py, seed {manifest['seed']}).",
    "Pipeline: decode, RandomResizedCrop 224 (antialiased), flip 0.5, brightness/contrast 0.4, mixup 0.2 per batch of 256, normalise to float16 NCHW.",
    f"augserve: `augserve run --threads N --epochs 2` (images/s over both epochs): 1 thread {a1:.0f}, {cores} threads {an:.0f} images/s.",
    "Command: `benches/cpu_compare.sh`.",
    "",
    *rows,
    "",
]) + "\n")
print(out.read_text())
PY
