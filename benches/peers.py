"""The same CPU pipeline in the libraries people use today, on the same corpus, for comparison.

    python benches/peers.py --corpus target/bench-corpus --out target/peers.json

Per image: decode, RandomResizedCrop (torchvision's sampling) to 224x224 with antialiased
bilinear resampling, horizontal flip (p 0.5), brightness and contrast jitter (0.4); per batch of
256: mixup (alpha 0.2) and normalisation to float16 NCHW with ImageNet mean/std. Peers:
  pillow      Image.open + Image.resize(box=..., BILINEAR, reducing_gap=None) (Pillow-SIMD-free)
  opencv      cv2.imdecode + cv2.resize(INTER_AREA when shrinking, else INTER_LINEAR)
  simplejpeg  simplejpeg.decode_jpeg (libjpeg-turbo) + cv2.resize
Each runs on one core (one process) and on the whole machine (one process per core), and
reports images/s. Pixels are not compared here: the semantics match, the arithmetic differs.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import pathlib
import random
import sys
import time

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1) * 255
SIZE = 224


def rrc_box(rng: random.Random, w: int, h: int) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params with scale (0.08, 1), ratio (3/4, 4/3)."""
    area = w * h
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ar = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * ar)))
        ch = int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch
    in_ratio = w / h
    if in_ratio < 3 / 4:
        cw, ch = w, int(round(w / (3 / 4)))
    elif in_ratio > 4 / 3:
        ch, cw = h, int(round(h * (4 / 3)))
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def jitter(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Brightness then contrast, factors in [0.6, 1.4], as uint8 (what torchvision does on u8)."""
    b = rng.uniform(0.6, 1.4)
    c = rng.uniform(0.6, 1.4)
    x = img.astype(np.float32) * b
    gray_mean = float((x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114).mean())
    x = (x - gray_mean) * c + gray_mean
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def per_image(lib: str, data: bytes, rng: random.Random) -> np.ndarray:
    if lib == "pillow":
        import io

        from PIL import Image

        im = Image.open(io.BytesIO(data)).convert("RGB")
        x, y, cw, ch = rrc_box(rng, *im.size)
        im = im.resize((SIZE, SIZE), Image.BILINEAR, box=(x, y, x + cw, y + ch))
        arr = np.asarray(im)
    else:
        import cv2

        if lib == "opencv":
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        else:
            import simplejpeg

            arr = simplejpeg.decode_jpeg(data, colorspace="RGB")
        h, w = arr.shape[:2]
        x, y, cw, ch = rrc_box(rng, w, h)
        crop = np.ascontiguousarray(arr[y : y + ch, x : x + cw])
        interp = cv2.INTER_AREA if cw > SIZE or ch > SIZE else cv2.INTER_LINEAR
        arr = cv2.resize(crop, (SIZE, SIZE), interpolation=interp)
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    return jitter(arr, rng)


def batch(images: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)
    lam = rng.beta(0.2, 0.2)
    x = lam * x + (1 - lam) * x[::-1]
    return ((x - MEAN) / STD).astype(np.float16)


def init_worker() -> None:
    """One core per worker process: no library thread pools."""
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def corpus_files(corpus) -> list[str]:
    return sorted(str(f) for f in pathlib.Path(corpus).rglob("*.jpg"))


def run_worker(args) -> tuple[int, float]:
    lib, files, batch_size, seed = args
    init_worker()
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    blobs = [pathlib.Path(f).read_bytes() for f in files]
    started = time.perf_counter()
    done = 0
    for i in range(0, len(blobs), batch_size):
        imgs = [per_image(lib, b, rng) for b in blobs[i : i + batch_size]]
        batch(imgs, nrng)
        done += len(imgs)
    return done, time.perf_counter() - started


def measure(lib: str, files: list[str], procs: int, batch_size: int) -> float:
    if procs == 1:
        n, secs = run_worker((lib, files, batch_size, 0))
        return n / secs
    shards = [(lib, files[k::procs], batch_size, k) for k in range(procs)]
    with mp.get_context("spawn").Pool(procs) as pool:
        pool.map(run_worker, [(lib, s[1][:8], batch_size, 0) for s in shards])  # warm up imports
        started = time.perf_counter()
        results = pool.map(run_worker, shards)
        wall = time.perf_counter() - started
    return sum(n for n, _ in results) / wall


def peer_versions() -> dict[str, str]:
    """The installed versions of the peers' packages: their rates change between releases."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("Pillow", "opencv-python-headless", "simplejpeg", "numpy"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "not installed"
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, type=pathlib.Path)
    p.add_argument("--out", type=pathlib.Path)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--libs", default="pillow,opencv,simplejpeg")
    p.add_argument("--procs", type=int, default=os.cpu_count())
    args = p.parse_args()
    files = corpus_files(args.corpus)
    results = {}
    for lib in args.libs.split(","):
        for procs in sorted({1, args.procs}):
            ips = measure(lib, files, procs, args.batch_size)
            results[f"{lib}/{procs}"] = ips
            print(f"{lib:10s} {procs} process(es): {ips:7.1f} images/s", flush=True)
    if args.out:
        out = {"images": len(files), "images_per_s": results, "versions": peer_versions()}
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
