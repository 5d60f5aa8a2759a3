"""The same CPU pipeline in the libraries people train with, set up as their users run them.

    python benches/peers.py --corpus target/bench-corpus-1000 --mode uint8 --out target/peers.json
    taskset -c 0 python benches/peers.py --corpus DIR --mode float16 --libs opencv,dali --procs 1

Per image: decode, RandomResizedCrop 224 (scale 0.08-1, ratio 3/4-4/3, antialiased), horizontal
flip (p 0.5), brightness jitter 0.4 (factor in [0.6, 1.4]) on uint8 pixels. Per batch of 256:
  --mode uint8    the uint8 HWC crops stacked into one batch array, what a DataLoader collates and
                  what timm's prefetcher and DALI users hand to the GPU (which normalises and mixes)
  --mode float16  the batch tensor normalised with torch's vectorised ops (ToDtype + Normalize, as
                  CPU-only users do it), timm-style batch mixup (alpha 0.2), float16 NCHW
Peers, each the library's usual way of doing these steps:
  opencv       cv2.imdecode + cvtColor, cv2.resize (INTER_AREA shrinking, else LINEAR), cv2.flip,
               cv2.convertScaleAbs for brightness (albumentations-style uint8 arithmetic)
  simplejpeg   simplejpeg.decode_jpeg (libjpeg-turbo, RGB out), then as opencv
  pillow       Image.open, Image.resize(box=crop, BILINEAR) (torchvision's PIL path),
               ImageEnhance.Brightness, Image.transpose
  torchvision  torchvision.io.decode_jpeg + transforms.v2 RandomResizedCrop(antialias=True),
               RandomHorizontalFlip, ColorJitter(brightness=0.4) on uint8 tensors
  dali         NVIDIA DALI's CPU-only pipeline (device_id=None): readers.file,
               decoders.image_random_crop (decodes only the crop's region), resize(antialias),
               flip, brightness; float16: crop_mirror_normalize, then the same torch mixup
Python peers run one process per core (DataLoader-style workers, library thread pools off);
DALI runs one pipeline with one thread per core, as DALI users run it. For one core, pin the
whole script (`taskset -c 0`): DALI and augserve keep helper threads, which must share the core. Each peer reads the
corpus into memory (DALI: from the page cache) before it is timed and is warmed up first.
Pixels are not compared: the semantics match, the arithmetic differs between libraries.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing as mp
import os
import pathlib
import random
import sys
import time

import numpy as np

SIZE = 224
BATCH = 256
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
MIXUP_ALPHA = 0.2
LIBS = ("opencv", "simplejpeg", "pillow", "torchvision", "dali")


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


def cv2_steps(arr, rng: random.Random):
    """Crop, resize, flip and brightness on a uint8 RGB HWC array, OpenCV's way."""
    import cv2

    h, w = arr.shape[:2]
    x, y, cw, ch = rrc_box(rng, w, h)
    interp = cv2.INTER_AREA if cw > SIZE or ch > SIZE else cv2.INTER_LINEAR
    out = cv2.resize(arr[y : y + ch, x : x + cw], (SIZE, SIZE), interpolation=interp)
    if rng.random() < 0.5:
        out = cv2.flip(out, 1)
    return cv2.convertScaleAbs(out, alpha=rng.uniform(0.6, 1.4))


def opencv_image(data: bytes, rng: random.Random):
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2_steps(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), rng)


def simplejpeg_image(data: bytes, rng: random.Random):
    import simplejpeg

    return cv2_steps(simplejpeg.decode_jpeg(data, colorspace="RGB"), rng)


def pillow_image(data: bytes, rng: random.Random):
    from PIL import Image, ImageEnhance

    im = Image.open(io.BytesIO(data)).convert("RGB")
    x, y, cw, ch = rrc_box(rng, *im.size)
    im = im.resize((SIZE, SIZE), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.6, 1.4))
    return np.asarray(im)


class TorchvisionImage:
    """decode_jpeg + transforms.v2 on uint8 CHW tensors; torch's own RNG draws the parameters."""

    def __init__(self):
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
        from torchvision.transforms import v2

        self.torch, self.decode_jpeg, self.rgb = torch, decode_jpeg, ImageReadMode.RGB
        self.steps = v2.Compose(
            [
                v2.RandomResizedCrop(SIZE, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=0.4),
            ]
        )

    def __call__(self, data: bytes, rng: random.Random):
        raw = self.torch.frombuffer(bytearray(data), dtype=self.torch.uint8)
        return self.steps(self.decode_jpeg(raw, mode=self.rgb))


def to_float16_mixed(batch, gen):
    """The batch tensor (uint8, NHWC or NCHW) normalised and mixed with torch's vectorised ops."""
    import torch
    from torchvision.transforms import v2

    x = batch if batch.shape[1] == 3 else batch.permute(0, 3, 1, 2)
    x = v2.functional.to_dtype(x, torch.float32, scale=True)
    x = v2.functional.normalize(x, MEAN, STD)
    lam = float(np.random.default_rng(gen).beta(MIXUP_ALPHA, MIXUP_ALPHA))
    flipped = x.flip(0)  # a copy, taken before x is scaled in place (timm's order)
    x = x.mul_(lam).add_(flipped, alpha=1 - lam)  # timm's Mixup, mode "batch"
    return x.to(torch.float16)


def collate(images: list, mode: str, gen: int):
    import torch

    batch = torch.stack(images) if isinstance(images[0], torch.Tensor) else torch.from_numpy(np.stack(images))
    return batch if mode == "uint8" else to_float16_mixed(batch, gen)


def init_worker(lib: str):
    """One core per worker: no library thread pools. Returns the per-image function."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    import cv2

    cv2.setNumThreads(1)
    if lib == "torchvision":
        return TorchvisionImage()
    return {"opencv": opencv_image, "simplejpeg": simplejpeg_image, "pillow": pillow_image}[lib]


def run_worker(args) -> tuple[int, float]:
    lib, mode, files, seed = args
    per_image = init_worker(lib)
    rng = random.Random(seed)
    blobs = [pathlib.Path(f).read_bytes() for f in files]
    collate([per_image(b, rng) for b in blobs[:4]], mode, seed)  # warm up the libraries
    started = time.perf_counter()
    done = 0
    for k, i in enumerate(range(0, len(blobs), BATCH)):
        images = [per_image(b, rng) for b in blobs[i : i + BATCH]]
        collate(images, mode, seed * 1000 + k)
        done += len(images)
    return done, time.perf_counter() - started


def measure_python_peer(lib: str, mode: str, files: list[str], procs: int) -> float:
    if procs == 1:
        n, secs = run_worker((lib, mode, files, 0))
        return n / secs
    shards = [(lib, mode, files[k::procs], k) for k in range(procs)]
    with mp.get_context("spawn").Pool(procs) as pool:
        pool.map(run_worker, [(lib, mode, s[2][:8], 0) for s in shards])  # import the libraries
        started = time.perf_counter()
        results = pool.map(run_worker, shards)
        wall = time.perf_counter() - started
    return sum(n for n, _ in results) / wall


def dali_pipeline(corpus: pathlib.Path, mode: str, threads: int):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=BATCH, num_threads=threads, device_id=None, seed=0)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=str(corpus), random_shuffle=False, name="reader")
        images = fn.decoders.image_random_crop(
            jpegs, device="cpu", output_type=types.RGB, random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3]
        )
        images = fn.resize(images, resize_x=SIZE, resize_y=SIZE, antialias=True)
        images = fn.brightness(images, brightness=fn.random.uniform(range=[0.6, 1.4]))
        flip = fn.random.coin_flip()
        if mode == "uint8":
            return fn.flip(images, horizontal=flip), labels
        mean, std = [m * 255 for m in MEAN], [s * 255 for s in STD]
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std, mirror=flip
        )
        return images, labels

    p = pipe()
    p.build()
    return p


def measure_dali(corpus: pathlib.Path, mode: str, images: int, procs: int) -> float:
    """One DALI pipeline, one thread per core; as many batches as the corpus has images."""
    import torch

    torch.set_num_threads(procs)
    p = dali_pipeline(corpus, mode, procs)
    p.run()  # warm-up batch
    batches = max(1, round(images / BATCH))
    started = time.perf_counter()
    for k in range(batches):
        out, _ = p.run()
        if mode == "float16":
            # Normalised by DALI in float32; mixed and narrowed by torch, as with the other peers.
            x = torch.from_numpy(np.array(out.as_tensor()))
            lam = float(np.random.default_rng(k).beta(MIXUP_ALPHA, MIXUP_ALPHA))
            flipped = x.flip(0)
            x.mul_(lam).add_(flipped, alpha=1 - lam).to(torch.float16)
    return batches * BATCH / (time.perf_counter() - started)


def peer_versions() -> dict[str, str]:
    """The installed versions of the peers' packages: their rates change between releases."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("Pillow", "opencv-python-headless", "simplejpeg", "torch", "torchvision", "nvidia-dali-cuda120", "numpy"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "not installed"
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, type=pathlib.Path)
    p.add_argument("--mode", choices=("uint8", "float16"), default="uint8")
    p.add_argument("--out", type=pathlib.Path)
    p.add_argument("--libs", default=",".join(LIBS))
    p.add_argument("--procs", default=str(os.cpu_count()), help="cores (processes, DALI threads), a list: 1,2")
    args = p.parse_args()
    files = sorted(str(f) for f in args.corpus.rglob("*.jpg"))
    results = {}
    for lib in args.libs.split(","):
        if lib not in LIBS:
            raise SystemExit(f"unknown peer {lib!r}; known: {', '.join(LIBS)}")
        for procs in [int(n) for n in args.procs.split(",")]:
            if lib == "dali":
                ips = measure_dali(args.corpus, args.mode, len(files), procs)
            else:
                ips = measure_python_peer(lib, args.mode, files, procs)
            results[f"{lib}/{procs}"] = ips
            print(f"{args.mode:7s} {lib:11s} {procs} core(s): {ips:7.1f} images/s", flush=True)
    if args.out:
        out = {"mode": args.mode, "images": len(files), "images_per_s": results, "versions": peer_versions()}
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
