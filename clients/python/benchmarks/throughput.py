"""Receive throughput: the Python client against the Rust client, same server, same request.

    python clients/python/benchmarks/throughput.py            # builds nothing; needs a release binary
    python clients/python/benchmarks/throughput.py --transport tcp

Starts `augserve serve` on a Unix socket (or TCP) over a generated dataset, then pulls uint8
(or --dtype) 224x224 batches of 256 with `augserve pull` (Rust, tonic) and with `augserve.Client` (Python,
grpcio), alternating runs, and prints images/s and MB/s of each and the ratio Python / Rust.
Both clients share the machine with the server, as a sidecar trainer would.
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

import augserve

REPO = pathlib.Path(__file__).resolve().parents[3]


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rust_pull(binary, addr, args) -> tuple[float, float]:
    out = subprocess.run(
        [str(binary), "pull", "--addr", addr, "--quiet", *args], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"pulled (\d+) images in \d+ batches, ([\d.]+) s: ([\d.]+) images/s, ([\d.]+) MB/s", out)
    if not m:
        raise RuntimeError(f"unexpected output from augserve pull: {out}")
    return float(m.group(3)), float(m.group(4))


def python_pull(addr, dataset, spec, batch_size, epochs, seed) -> tuple[float, float]:
    with augserve.Client(addr) as c:
        images = nbytes = 0
        started = time.perf_counter()
        for b in c.stream(dataset, spec, batch_size=batch_size, epochs=epochs, seed=seed):
            images += len(b)
            nbytes += b.images.nbytes
        secs = time.perf_counter() - started
    return images / secs, nbytes / secs / 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default=str(REPO / "target/release/augserve"))
    p.add_argument("--per-class", type=int, default=64, help="demo images per class (10 classes)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--transport", choices=["uds", "tcp"], default="uds")
    p.add_argument("--dtype", choices=["uint8", "float16", "float32"], default="uint8")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    binary = pathlib.Path(args.bin)
    if not binary.is_file():
        sys.exit(f"no binary at {binary}: run `cargo build --release`")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        data = tmp / "data"
        subprocess.run([str(binary), "demo-data", str(data), "--per-class", str(args.per_class)], check=True, capture_output=True)
        (tmp / "spec.toml").write_text(f'[output]\ndtype = "{args.dtype}"\n')
        sock = tmp / "augserve.sock"
        port = 50000 + os.getpid() % 10000
        addr = f"unix://{sock}" if args.transport == "uds" else f"127.0.0.1:{port}"
        server = subprocess.Popen(
            [str(binary), "serve", "--listen-uds", str(sock), "--listen-tcp", f"127.0.0.1:{port}", "--dataset", f"bench={data}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, AUGSERVE_LOG="warn"),
        )
        try:
            with augserve.Client(addr) as c:
                info = c.wait_ready(30)
            spec = augserve.PipelineSpec(dtype=args.dtype)
            common = ["--dataset", "bench", "--batch-size", str(args.batch_size), "--spec", str(tmp / "spec.toml")]
            rust_pull(binary, addr, common + ["--epochs", "1"])  # warm the page cache and the server
            rust, py = [], []
            for r in range(args.repeats):
                rust.append(rust_pull(binary, addr, common + ["--seed", str(r), "--epochs", str(args.epochs)]))
                py.append(python_pull(addr, "bench", spec, args.batch_size, args.epochs, r))
                print(f"run {r}: rust {rust[-1][0]:.0f} images/s {rust[-1][1]:.0f} MB/s | "
                      f"python {py[-1][0]:.0f} images/s {py[-1][1]:.0f} MB/s", flush=True)
        finally:
            server.terminate()
            server.wait()

    rust_ips = statistics.median(x[0] for x in rust)
    py_ips = statistics.median(x[0] for x in py)
    result = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, no GPU used",
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
        "server_threads": info.worker_threads,
        "batch_device": info.batch_device,
        "transport": args.transport,
        "dataset_images": args.per_class * 10,
        "batch": f"{args.batch_size} x 3 x 224 x 224 {args.dtype}",
        "epochs_per_run": args.epochs,
        "rust_images_per_s": rust_ips,
        "rust_mb_per_s": statistics.median(x[1] for x in rust),
        "python_images_per_s": py_ips,
        "python_mb_per_s": statistics.median(x[1] for x in py),
        "python_over_rust": py_ips / rust_ips,
        "runs": {"rust": rust, "python": py},
    }
    print(f"\nmedian of {args.repeats} ({args.transport}): rust {rust_ips:.0f} images/s, python {py_ips:.0f} images/s, "
          f"python/rust = {py_ips / rust_ips:.2f}")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
