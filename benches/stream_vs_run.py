"""One server stream against the in-process pipeline, same spec and threads (issue 24's yardstick).

    python benches/stream_vs_run.py --corpus target/bench-corpus-1000 --threads 2 --out benches/results/vm-2c/stream_vs_run.json

Both run the batch loop of `augserve_core::pipeline::schedule` (batch k+1's per-image stage
overlaps batch k's batch ops): `augserve run` in process, and `augserve serve` streaming to
`augserve pull --transport shm` over the Unix socket (the tensor is written into the shared-memory
slot; the client reads it there). Same spec (benches' spec: RandomResizedCrop 224, flip,
brightness/contrast 0.4, mixup 0.2, float16 NCHW), batches of 256, the same worker threads.
Runs alternate, after a warm-up of each; the ratio is of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent

SPEC = """[color]
brightness = 0.4
contrast = 0.4

[mix]
mixup_alpha = 0.2

[output]
dtype = "float16"
layout = "nchw"
"""


def in_process(binary: str, corpus: str, spec: pathlib.Path, threads: int, epochs: int, tmp: pathlib.Path) -> float:
    summary = tmp / "run.json"
    subprocess.run(
        [binary, "run", "--data", corpus, "--spec", str(spec), "--threads", str(threads), "--batch-size", "256",
         "--epochs", str(epochs), "--quiet", "--summary-json", str(summary)],
        check=True, capture_output=True,
    )
    return float(json.loads(summary.read_text())["images_per_s"])


def stream(binary: str, addr: str, spec: pathlib.Path, epochs: int, transport: str) -> float:
    out = subprocess.run(
        [binary, "pull", "--addr", addr, "--quiet", "--dataset", "bench", "--batch-size", "256", "--spec", str(spec),
         "--epochs", str(epochs), "--transport", transport],
        capture_output=True, text=True, check=True,
    ).stdout
    m = re.search(r"pulled (\d+) images in \d+ batches, ([\d.]+) s: ([\d.]+) images/s", out)
    if not m:
        raise RuntimeError(f"unexpected output from augserve pull: {out}")
    return float(m.group(3))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--bin", default=str(REPO / "target/release/augserve"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    runs: dict[str, list[float]] = {"in_process": [], "stream_uds_shm": [], "stream_uds_inline": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        spec = tmp / "spec.toml"
        spec.write_text(SPEC)
        sock = tmp / "augserve.sock"
        server = subprocess.Popen(
            [args.bin, "serve", "--listen-uds", str(sock), "--listen-tcp", "", "--dataset", f"bench={args.corpus}",
             "--threads", str(args.threads), "--shm-dir", str(tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, AUGSERVE_LOG="warn"),
        )
        try:
            addr = f"unix://{sock}"
            deadline = time.time() + 30
            while not sock.exists() and time.time() < deadline:
                time.sleep(0.05)
            stream(args.bin, addr, spec, 1, "shm")  # warm-up: page cache, server pools
            in_process(args.bin, args.corpus, spec, args.threads, 1, tmp)
            for r in range(args.repeats):
                runs["in_process"].append(in_process(args.bin, args.corpus, spec, args.threads, args.epochs, tmp))
                runs["stream_uds_shm"].append(stream(args.bin, addr, spec, args.epochs, "shm"))
                runs["stream_uds_inline"].append(stream(args.bin, addr, spec, args.epochs, "inline"))
                print(f"run {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()), flush=True)
        finally:
            server.terminate()
            server.wait()
    med = {k: statistics.median(v) for k, v in runs.items()}
    base = med["in_process"]
    version = subprocess.run([args.bin, "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    doc = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "augserve": version,
        "commit": commit,
        "corpus": args.corpus,
        "images": sum(1 for _ in pathlib.Path(args.corpus).rglob("*.jpg")),
        "threads": args.threads,
        "epochs_per_run": args.epochs,
        "batch_size": 256,
        "spec": SPEC,
        "median_images_per_s": med,
        "ratio_to_in_process": {k: v / base for k, v in med.items()},
        "runs": runs,
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    for k, v in med.items():
        print(f"{k:20s} {v:7.1f} images/s  ({v / base:.3f} of in-process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
