"""torchvision's GPU pipeline on the benchmark corpus, the peer of augserve's GPU path.

    python3 benches/gpu/torchvision_peer.py --corpus target/gpu-kit/corpus --out torchvision.json [--device cpu]

Per batch of 256: batched `torchvision.io.decode_jpeg(list, device='cuda')` (nvJPEG), then per
image v2.RandomResizedCrop(224, antialias=True), RandomHorizontalFlip, ColorJitter(brightness
0.4, contrast 0.4) on the GPU tensors, then v2.MixUp(alpha 0.2) on the batch and normalisation to
float16 NCHW: the same semantics as augserve's benchmark pipeline. Also times the decode alone.
Reports images/s after one warm-up batch; the encoded bytes are in host memory, as augserve's
page-cached reads are. `--device cpu` runs the same code on the CPU (for checking the script
on a machine without a GPU; those figures are not the GPU peer's).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import torch
import torchvision
from torchvision.io import decode_jpeg, ImageReadMode
from torchvision.transforms import v2

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, type=pathlib.Path)
    p.add_argument("--out", type=pathlib.Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args()
    files = sorted(a.corpus.rglob("*.jpg"))
    classes = sorted({f.parent.name for f in files})
    labels = torch.tensor([classes.index(f.parent.name) for f in files])
    data = [torchvision.io.read_file(str(f)) for f in files]
    per_image = v2.Compose([
        v2.RandomResizedCrop(224, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.4, contrast=0.4),
    ])
    mixup = v2.MixUp(alpha=0.2, num_classes=len(classes))
    mean, std = MEAN.to(a.device), STD.to(a.device)
    batches = [range(i, min(i + a.batch_size, len(files))) for i in range(0, len(files), a.batch_size)]

    def decode(idx):
        return decode_jpeg([data[i] for i in idx], mode=ImageReadMode.RGB, device=a.device)

    def pipeline(idx):
        imgs = decode(idx)
        x = torch.stack([per_image(im) for im in imgs])
        x, y = mixup(x.float() / 255.0, labels[list(idx)].to(a.device))
        return ((x - mean) / std).half(), y

    def timed(fn):
        fn(batches[0])  # warm-up: nvJPEG handles, kernels, allocator
        sync(a.device)
        n = 0
        t0 = time.perf_counter()
        for _ in range(a.epochs):
            for idx in batches:
                fn(idx)
                n += len(idx)
        sync(a.device)
        return n / (time.perf_counter() - t0)

    decode_ips = timed(decode)
    pipe_ips = timed(pipeline)
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    doc = {
        "device": name,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "images": len(files),
        "batch_size": a.batch_size,
        "decode_images_per_s": decode_ips,
        "pipeline_images_per_s": pipe_ips,
    }
    print(f"torchvision on {name}: decode alone {decode_ips:.0f} images/s, pipeline {pipe_ips:.0f} images/s")
    if a.out:
        a.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
