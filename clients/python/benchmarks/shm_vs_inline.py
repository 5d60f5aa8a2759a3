"""Delivery rate to a Python trainer: shared memory against inline bytes over the Unix socket.

    python clients/python/benchmarks/shm_vs_inline.py [--out result.json]

Starts `augserve serve` (release binary) on a generated dataset. For each transport, a stream
of float32 224x224 batches of 32 (19 MB) fills the server's prefetch queue (6 batches) while
the client waits; then the client times taking those 6 batches and copying each into a staging
array (as the copy to pinned memory before the GPU), so the figure is the transport's, not
the pipeline's. Alternates transports, median of --repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import augserve

REPO = pathlib.Path(__file__).resolve().parents[3]


def rate(addr: str, transport: str) -> float:
    with augserve.Client(addr) as c:
        s = c.stream("bench", augserve.PipelineSpec(dtype="float32"), batch_size=32, epochs=0,
                     prefetch=6, transport=transport)
        next(s)
        time.sleep(2.0)  # the server fills its queue
        nbytes = 0
        staging = None
        t0 = time.perf_counter()
        for _ in range(6):
            b = next(s)
            if staging is None:
                staging = np.empty_like(b.images)
            np.copyto(staging, b.images)  # what a trainer does next: copy to (pinned) staging
            nbytes += b.images.nbytes
        secs = time.perf_counter() - t0
        s.close()
        return nbytes / secs / 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default=str(REPO / "target/release/augserve"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        subprocess.run([a.bin, "demo-data", str(tmp / "data"), "--per-class", "32"], check=True, capture_output=True)
        sock = tmp / "s.sock"
        server = subprocess.Popen([a.bin, "serve", "--listen-uds", str(sock), "--listen-tcp", "", "--dataset", f"bench={tmp / 'data'}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, AUGSERVE_LOG="warn"))
        try:
            addr = f"unix://{sock}"
            with augserve.Client(addr) as c:
                c.wait_ready(30)
            runs: dict[str, list[float]] = {"inline": [], "shm": []}
            for r in range(a.repeats):
                for t in runs:
                    runs[t].append(rate(addr, t))
                print(f"run {r + 1}: inline {runs['inline'][-1]:.0f} MB/s, shm {runs['shm'][-1]:.0f} MB/s", flush=True)
        finally:
            server.terminate()
            server.wait()
    i, s = statistics.median(runs["inline"]), statistics.median(runs["shm"])
    print(f"median: inline {i:.0f} MB/s, shm {s:.0f} MB/s = {s / i:.2f}x")
    if a.out:
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
        pathlib.Path(a.out).write_text(json.dumps({
            "machine": f"{cpu}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
            "command": "clients/python/benchmarks/shm_vs_inline.py", "batch": "32 x 3 x 224 x 224 float32 (19.3 MB)",
            "inline_mb_per_s": i, "shm_mb_per_s": s, "ratio": s / i, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
