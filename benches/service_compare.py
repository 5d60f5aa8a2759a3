"""Service-level throughput: images/s and MB/s that reach a trainer process.

    python benches/service_compare.py --corpus target/bench-corpus-1000 --spec spec.toml --threads 2 --out target/service.json

Same pipeline as peers.py's float16 mode (decode, RandomResizedCrop 224, flip, brightness 0.4,
mixup 0.2, float16 NCHW, batches of 256), measured as the trainer sees it:

- augserve in process (`augserve run`): the pipeline alone, no transport;
- `augserve serve` with N worker threads, pulled by the Rust client (`augserve pull`) and by the
  Python client (`augserve.Client`), over the Unix socket and over TCP on loopback, and over
  the Unix socket with shared-memory delivery (`transport="shm"`);
- the PyTorch-DataLoader-style baseline: N Python worker processes run the Pillow pipeline
  (peers.py's, torch-normalised batches) and hand each finished batch to the parent through multiprocessing, as
  DataLoader's workers do (the parent receives every batch; it only counts them).

Each figure is the median of --repeats runs of --epochs epochs over the corpus, after one
warm-up epoch (page cache, server pools).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pathlib
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import peers  # noqa: E402  (the same Pillow pipeline as the peer comparison)



def rust_pull(binary: pathlib.Path, addr: str, args: list[str]) -> tuple[float, float]:
    out = subprocess.run(
        [str(binary), "pull", "--addr", addr, "--quiet", *args], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"pulled (\d+) images in \d+ batches, ([\d.]+) s: ([\d.]+) images/s, ([\d.]+) MB/s", out)
    if not m:
        raise RuntimeError(f"unexpected output from augserve pull: {out}")
    return float(m.group(3)), float(m.group(4))


def python_pull(addr: str, batch_size: int, epochs: int, seed: int, transport: str = "inline") -> tuple[float, float]:
    import augserve

    spec = augserve.PipelineSpec(
        color=augserve.ColorJitter(brightness=0.4, contrast=0.4),
        mix=augserve.Mix(mixup_alpha=0.2),
        dtype="float16",
        layout="nchw",
    )
    with augserve.Client(addr) as c:
        images = nbytes = 0
        started = time.perf_counter()
        for b in c.stream("bench", spec, batch_size=batch_size, epochs=epochs, seed=seed, transport=transport):
            images += len(b)
            nbytes += b.images.nbytes
        secs = time.perf_counter() - started
    return images / secs, nbytes / secs / 1e6


def in_process(binary: pathlib.Path, corpus: str, spec: pathlib.Path, threads: int, epochs: int, tmp: pathlib.Path):
    summary = tmp / "run.json"
    subprocess.run(
        [str(binary), "run", "--data", corpus, "--spec", str(spec), "--threads", str(threads), "--batch-size", "256",
         "--epochs", str(epochs), "--quiet", "--summary-json", str(summary)],
        check=True, capture_output=True,
    )
    s = json.loads(summary.read_text())
    ips = float(s["images_per_s"])
    return ips, ips * 3 * 224 * 224 * 2 / 1e6


def dataloader_batch(job):
    """One batch in a worker process: the Pillow pipeline, returned to the parent (pickled)."""
    files, seed = job
    rng = random.Random(seed)
    imgs = [peers.pillow_image(pathlib.Path(f).read_bytes(), rng) for f in files]
    return peers.collate(imgs, "float16", seed).numpy()


def dataloader_init() -> None:
    peers.init_worker("pillow")


def dataloader_style(files: list[str], procs: int, batch_size: int, epochs: int) -> tuple[float, float]:
    jobs = [(files[i : i + batch_size], k) for k, i in enumerate(range(0, len(files), batch_size))]
    with mp.get_context("spawn").Pool(procs, initializer=dataloader_init) as pool:
        list(pool.imap(dataloader_batch, jobs[:procs]))  # warm up imports and the page cache
        images = nbytes = 0
        started = time.perf_counter()
        for _ in range(epochs):
            for x in pool.imap(dataloader_batch, jobs):  # in order, like DataLoader
                images += x.shape[0]
                nbytes += x.nbytes
        secs = time.perf_counter() - started
    return images / secs, nbytes / secs / 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--spec", required=True, type=pathlib.Path,
                   help="the benchmark pipeline spec (TOML; cpu_compare.sh writes it); the Python client asks for the same")
    p.add_argument("--bin", default=str(REPO / "target/release/augserve"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    binary = pathlib.Path(args.bin)
    files = sorted(str(f) for f in pathlib.Path(args.corpus).rglob("*.jpg"))
    results: dict[str, list[tuple[float, float]]] = {}

    def record(name: str, value: tuple[float, float]) -> None:
        results.setdefault(name, []).append(value)
        print(f"  {name:28s} {value[0]:7.1f} images/s {value[1]:7.1f} MB/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        spec = args.spec.resolve()
        sock = tmp / "augserve.sock"
        port = 50000 + os.getpid() % 10000
        server = subprocess.Popen(
            [str(binary), "serve", "--listen-uds", str(sock), "--listen-tcp", f"127.0.0.1:{port}",
             "--dataset", f"bench={args.corpus}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, AUGSERVE_LOG="warn", AUGSERVE_THREADS=str(args.threads)),
        )
        try:
            uds, tcp = f"unix://{sock}", f"127.0.0.1:{port}"
            deadline = time.time() + 30
            while not sock.exists() and time.time() < deadline:
                time.sleep(0.05)
            common = ["--dataset", "bench", "--batch-size", "256", "--spec", str(spec)]
            rust_pull(binary, uds, common + ["--epochs", "1"])  # warm-up
            for r in range(args.repeats):
                print(f"run {r + 1}/{args.repeats}", flush=True)
                record("in_process", in_process(binary, args.corpus, spec, args.threads, args.epochs, tmp))
                for name, addr in (("uds", uds), ("tcp", tcp)):
                    record(f"rust_{name}", rust_pull(binary, addr, common + ["--seed", str(r), "--epochs", str(args.epochs)]))
                    record(f"python_{name}", python_pull(addr, 256, args.epochs, r))
                # Shared-memory delivery over the socket (same host).
                record("rust_uds_shm", rust_pull(binary, uds, common + ["--seed", str(r), "--epochs", str(args.epochs), "--transport", "shm"]))
                record("python_uds_shm", python_pull(uds, 256, args.epochs, r, "shm"))
        finally:
            server.terminate()
            server.wait()
        for r in range(args.repeats):
            record("dataloader_style_pillow", dataloader_style(files, args.threads, 256, args.epochs))

    med = {k: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals)) for k, vals in results.items()}
    doc = {
        "threads": args.threads,
        "epochs_per_run": args.epochs,
        "repeats": args.repeats,
        "images": len(files),
        "median": {k: {"images_per_s": v[0], "mb_per_s": v[1]} for k, v in med.items()},
        "runs": results,
    }
    pathlib.Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    base = med["in_process"][0]
    for k, (ips, mbs) in med.items():
        print(f"{k:28s} {ips:7.1f} images/s {mbs:7.1f} MB/s  ({ips / base:.2f} of in-process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
