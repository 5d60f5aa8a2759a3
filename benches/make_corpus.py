"""Cuts a reproducible ImageNet-like benchmark corpus from real photographs.

    python benches/make_corpus.py --out target/bench-corpus            # 1000 images, 10 classes
    python benches/make_corpus.py --out DIR --images 5000 --seed 1
    python benches/make_corpus.py --out DIR --kind large --images 300    # long side 1200-2400

Source: Debian's mate-backgrounds photographs (scripts/fetch-photos.sh puts them in
target/testdata/photos). Each image is a random crop of a photo (aspect 3:4..16:9, mostly 4:3),
resized so its long side is 333-800 px (most near 500; `--kind large`: 1200-2400 px, uniform,
like OpenImages/COCO originals and phone photos), and saved at JPEG quality 75-95:
85 % 4:2:0 chroma subsampling (the rest 4:4:4), 10 % progressive. Classes are the photos'
indices modulo 10. Same seed, same photos: byte-identical corpus. The output is an ImageFolder
(`class_k/NNNNN.jpg`) plus `manifest.json` describing it (source, counts, sizes, qualities).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import random
import subprocess
import sys

from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent


def photos(src: pathlib.Path) -> list[pathlib.Path]:
    if not (src / ".complete").exists():
        subprocess.run([str(REPO / "scripts/fetch-photos.sh"), str(src)], check=True)
    found = sorted(src.glob("*.jpg"))
    if not found:
        raise SystemExit(f"no photos in {src}")
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=pathlib.Path)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", choices=("imagenet", "large"), default="imagenet", help="size of the images")
    p.add_argument("--photos", type=pathlib.Path, default=REPO / "target/testdata/photos")
    args = p.parse_args()
    manifest_path = args.out / "manifest.json"
    if manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        same = (m.get("images"), m.get("seed"), m.get("kind", "imagenet")) == (args.images, args.seed, args.kind)
        if same:
            print(f"corpus already at {args.out} ({m['images']} images)")
            return 0
    rng = random.Random(args.seed)
    try:
        sources = photos(args.photos)
        source_desc = f"{len(sources)} photographs from Debian's mate-backgrounds (nature/)"
    except (subprocess.CalledProcessError, SystemExit) as e:
        # Fallback: the demo dataset's synthetic images, and say so.
        print(f"no photographs ({e}); falling back to the demo dataset", file=sys.stderr)
        demo = args.out.parent / "demo-source"
        subprocess.run([str(REPO / "target/release/augserve"), "demo-data", str(demo)], check=True)
        sources = sorted(demo.rglob("*.jpg"))
        source_desc = f"FALLBACK: {len(sources)} synthetic demo images (no photographs available)"
    opened = [Image.open(s).convert("RGB") for s in sources]
    sizes, qualities, progressive, subsampled = [], [], 0, 0
    for i in range(args.images):
        k = rng.randrange(len(opened))
        img = opened[k]
        aspect = rng.choice([4 / 3] * 6 + [3 / 4, 16 / 9, 3 / 2, 1.0])
        w0, h0 = img.size
        # Large images come from most of a photo (the photos' long sides are 1280-2560).
        cw = rng.uniform(0.3 if args.kind == "imagenet" else 0.75, 1.0) * w0
        ch = cw / aspect
        if ch > h0:
            ch = h0 * rng.uniform(0.5, 1.0)
            cw = ch * aspect
        x = rng.uniform(0, w0 - cw)
        y = rng.uniform(0, h0 - ch)
        if args.kind == "imagenet":
            long_side = int(min(800, max(333, rng.gauss(500, 90))))
        else:
            # Not upscaled beyond 1200 (upscaled photos are smoother, so faster to decode).
            long_side = min(rng.randint(1200, 2400), max(1200, round(max(cw, ch))))
        scale = long_side / max(cw, ch)
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        out = img.resize(size, Image.BICUBIC, box=(x, y, x + cw, y + ch))
        quality = rng.randint(75, 95)
        prog = rng.random() < 0.10
        sub = 2 if rng.random() < 0.85 else 0
        d = args.out / f"class_{k % 10}"
        d.mkdir(parents=True, exist_ok=True)
        out.save(d / f"{i:05d}.jpg", "JPEG", quality=quality, progressive=prog, subsampling=sub, optimize=False)
        sizes.append(size)
        qualities.append(quality)
        progressive += prog
        subsampled += sub == 2
    digest = hashlib.sha256()
    for f in sorted(args.out.rglob("*.jpg")):
        digest.update(f.read_bytes())
    n = args.images
    manifest = {
        "images": n,
        "seed": args.seed,
        "kind": args.kind,
        "classes": len({p.parent.name for p in args.out.rglob("*.jpg")}),
        "source": source_desc,
        "mean_size": [round(sum(s[0] for s in sizes) / n), round(sum(s[1] for s in sizes) / n)],
        "long_side_range": [min(max(s) for s in sizes), max(max(s) for s in sizes)],
        "quality_range": [min(qualities), max(qualities)],
        "progressive_fraction": round(progressive / n, 3),
        "subsampling_420_fraction": round(subsampled / n, 3),
        "bytes": sum(f.stat().st_size for f in args.out.rglob("*.jpg")),
        "sha256": digest.hexdigest(),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
