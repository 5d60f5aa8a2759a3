"""Reference PNG and WebP decodes with Pillow for tests/decode_vs_pillow.rs.

argv[1]: a scratch folder; argv[2]: a JSON list of PNG paths. First writes, into the
folder, PNGs of kinds the Rust side cannot write (palette, palette with a transparent
colour, 1-bit) and WebPs (libwebp's lossy, lossless, and lossy with alpha) of the listed
RGB PNGs of at least 64x64. Then decodes each listed file and each of those with
Image.open(path).convert("RGB"), as torchvision's ImageFolder loader does, writes the raw
RGB bytes to <folder>/<index>.rgb and prints one JSON list describing them.
"""
import json
import os
import sys

from PIL import Image

out_dir, list_path = sys.argv[1], sys.argv[2]
paths = json.load(open(list_path))

w, h = 37, 23
pal = Image.new("P", (w, h))
pal.putpalette([10, 20, 30, 200, 40, 90, 0, 255, 128, 250, 250, 5] + [0] * (256 * 3 - 12))
pal.putdata([(x * 3 + y * 5) % 4 for y in range(h) for x in range(w)])
for name, extra in [("pillow_palette.png", {}), ("pillow_palette_trns.png", {"transparency": 1})]:
    pal.save(os.path.join(out_dir, name), **extra)
    paths.append(os.path.join(out_dir, name))
checker = bytes(((x ^ y) & 1) * 255 for y in range(h) for x in range(w))
Image.frombytes("L", (w, h), checker).convert("1").save(os.path.join(out_dir, "pillow_1bit.png"))
paths.append(os.path.join(out_dir, "pillow_1bit.png"))

for src in list(paths):
    img = Image.open(src)
    if img.mode != "RGB" or min(img.size) < 64:
        continue
    base = os.path.join(out_dir, os.path.basename(src)[:-4])
    for name, image, options in [
        ("lossy", img, {"quality": 80}),
        ("lossless", img, {"lossless": True}),
        ("alpha", img.convert("RGBA"), {"quality": 80}),
    ]:
        image.save(f"{base}_{name}.webp", **options)
        paths.append(f"{base}_{name}.webp")

results = []
for i, path in enumerate(paths):
    img = Image.open(path).convert("RGB")
    raw = os.path.join(out_dir, f"{i}.rgb")
    with open(raw, "wb") as f:
        f.write(img.tobytes())
    results.append({"path": path, "raw": raw, "width": img.width, "height": img.height})
print(json.dumps(results))
