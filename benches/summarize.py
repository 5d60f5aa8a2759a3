"""Writes benches/results/<machine>/summary.md from one run of benches/cpu_compare.sh.

Inputs (all from the same run): the corpus manifest, peers.json (peers.py), the two
`augserve run` summaries (1 thread, all cores), `augserve bench`'s bench.json/bench.txt/bench.png
and service.json (service_compare.py). Ratios first, then each figure with the machine, the
corpus and the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import subprocess
import time


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "none"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "none"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=pathlib.Path, required=True, help="folder with the run's JSON files")
    p.add_argument("--corpus", type=pathlib.Path, required=True)
    p.add_argument("--out", type=pathlib.Path, required=True, help="results folder for this machine")
    a = p.parse_args()
    cores = os.cpu_count() or 1
    m = json.loads((a.corpus / "manifest.json").read_text())
    peers_json = json.loads((a.work / "peers.json").read_text())
    peers = peers_json["images_per_s"]
    versions = peers_json.get("versions", {})
    aug = {t: json.loads((a.work / f"augserve-{t}.json").read_text())["images_per_s"] for t in (1, cores)}
    bench = json.loads((a.work / "bench" / "bench.json").read_text())
    service = json.loads((a.work / "service.json").read_text())["median"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    machine = f"{cpu_model()}, {cores} cores, GPU: {gpu_name()}"
    corpus = (
        f"{m['images']} JPEGs cut from {m['source']} by `benches/make_corpus.py --images {m['images']}` (seed {m['seed']}, "
        f"sha256 {m['sha256'][:12]}): mean {m['mean_size'][0]}x{m['mean_size'][1]}, q{m['quality_range'][0]}-{m['quality_range'][1]}, "
        f"{m['subsampling_420_fraction'] * 100:.0f} % 4:2:0, {m['progressive_fraction'] * 100:.0f} % progressive"
    )
    # 1-thread CPU rows of augserve bench: decode alone vs the whole pipeline, at the largest batch.
    cpu1 = [r for r in bench["rows"] if r["device"] == "cpu" and r["threads"] == 1]
    cpu1 = max(cpu1, key=lambda r: r["batch_size"]) if cpu1 else None
    decode_only = cpu1["batch_size"] * 1e3 / cpu1["decode_ms"] if cpu1 else float("nan")
    s = lambda k: service[k]["images_per_s"]  # noqa: E731
    in_proc = s("in_process")

    def row(name, value, target, met, source):
        return f"| {name} | **{value}** | {target} | {'yes' if met else 'no'} | {source} |"

    lines = [
        f"# augserve benchmarks on {platform.node()}",
        "",
        f"Machine: {machine}. Date: {time.strftime('%Y-%m-%d')}. Commit: {commit}{' (with uncommitted changes)' if dirty else ''}.",
        f"Corpus: {corpus}.",
        "Pipeline everywhere: decode, RandomResizedCrop 224 (antialiased bilinear), flip 0.5, brightness/contrast 0.4, "
        "mixup 0.2 per batch of 256, normalise to float16 NCHW.",
        "Everything below comes from one run of `benches/cpu_compare.sh` on this machine; the chart is `bench.png`.",
        "",
        "## Ratios",
        "",
        "| figure | value | target | met | from |",
        "| --- | ---: | --- | --- | --- |",
        row("augserve / OpenCV, one core", f"{aug[1] / peers['opencv/1']:.2f}x", ">= 1.4x", aug[1] / peers["opencv/1"] >= 1.4, "A, B"),
        row(f"augserve / OpenCV, {cores} cores", f"{aug[cores] / peers[f'opencv/{cores}']:.2f}x", "-", True, "A, B"),
        row("augserve / Pillow, one core", f"{aug[1] / peers['pillow/1']:.2f}x", "-", True, "A, B"),
        row(f"augserve / Pillow, {cores} cores", f"{aug[cores] / peers[f'pillow/{cores}']:.2f}x", "-", True, "A, B"),
        row("augserve / simplejpeg + OpenCV, one core", f"{aug[1] / peers['simplejpeg/1']:.2f}x", "-", True, "A, B"),
        row(f"augserve / simplejpeg + OpenCV, {cores} cores", f"{aug[cores] / peers[f'simplejpeg/{cores}']:.2f}x", "-", True, "A, B"),
        row(f"augserve 1 -> {cores} threads", f"{aug[cores] / aug[1]:.2f}x", ">= 1.8x", aug[cores] / aug[1] >= 1.8, "A"),
        row("pipeline / zune-jpeg decode alone, one thread", f"{cpu1['images_per_s'] / decode_only * 100:.0f} %" if cpu1 else "n/a",
            ">= 85 %", bool(cpu1) and cpu1["images_per_s"] / decode_only >= 0.85, "C"),
        row("service (Rust client, UDS) / in process", f"{s('rust_uds') / in_proc:.2f}", ">= 0.90", s("rust_uds") / in_proc >= 0.9, "D"),
        row("service (Rust client, UDS, shared memory) / in process", f"{s('rust_uds_shm') / in_proc:.2f}", ">= 0.90", s("rust_uds_shm") / in_proc >= 0.9, "D"),
        row("service (Python client, UDS) / DataLoader-style Pillow", f"{s('python_uds') / s('dataloader_style_pillow'):.2f}x", "-", True, "D"),
        row("service (Python client, UDS, shared memory) / DataLoader-style Pillow", f"{s('python_uds_shm') / s('dataloader_style_pillow'):.2f}x", "-", True, "D"),
        "",
        "GPU rows (resize + mixup + normalise on the GPU, torchvision's GPU pipeline): not on this machine; "
        "`benches/gpu/run.sh` measures them on a device machine.",
        "",
        "## Figures",
        "",
        "A. `augserve run --data <corpus> --spec <bench spec> --threads N --batch-size 256 --epochs 2` (images/s over both epochs; "
        f"the second reads from the page cache): 1 thread **{aug[1]:.0f}**, {cores} threads **{aug[cores]:.0f}** images/s.",
        "",
        f"B. `benches/peers.py --corpus <corpus> --procs {cores}` (one process per core; each decodes from bytes in memory):",
        "",
        "| peer | 1 core images/s | all cores images/s |",
        "| --- | ---: | ---: |",
        *[f"| {lib} | {peers[f'{lib}/1']:.0f} | {peers[f'{lib}/{cores}']:.0f} |" for lib in ("opencv", "pillow", "simplejpeg")],
        "",
        *([f"Peer packages: {', '.join(f'{k} {v}' for k, v in versions.items())}.", ""] if versions else []),
        f"C. `augserve bench --data <corpus> --batches 4 --out-dir bench` (ms per batch per stage; read/decode/colour summed over "
        f"threads; 'decode alone' = batch size / decode ms of the 1-thread row):",
        "",
        "```",
        (a.work / "bench" / "bench.txt").read_text().rstrip(),
        "```",
        "",
        "![augserve bench](bench.png)",
        "",
        f"D. `benches/service_compare.py --corpus <corpus> --spec <bench spec> --threads {cores}` (median of 3 runs of 2 epochs; server with {cores} "
        "worker threads on the same machine as the client; DataLoader-style = "
        f"{cores} worker processes running the Pillow pipeline, batches pickled to the parent):",
        "",
        "| delivered to | images/s | MB/s | / in process |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {k.replace('_', ' ')} | {v['images_per_s']:.0f} | {v['mb_per_s']:.0f} | {v['images_per_s'] / in_proc:.2f} |" for k, v in service.items()],
        "",
    ]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "summary.md").write_text("\n".join(lines))
    for f in ("bench.json", "bench.csv", "bench.png"):
        shutil.copy(a.work / "bench" / f, a.out / f)
    shutil.copy(a.work / "service.json", a.out / "service.json")
    shutil.copy(a.work / "peers.json", a.out / "peers.json")
    print((a.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
