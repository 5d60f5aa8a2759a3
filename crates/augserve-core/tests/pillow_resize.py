"""Reference resizes with Pillow for tests/resize_vs_pillow.rs.

Reads a JSON list of jobs from argv[1]; each job names a raw RGB input file, its size, a
crop box and an output size, and the raw file to write Pillow's
Image.resize(size, BILINEAR, box=box) result to.
"""
import json
import sys

from PIL import Image

jobs = json.load(open(sys.argv[1]))
cache = {}
for job in jobs:
    key = job["input"]
    if key not in cache:
        with open(key, "rb") as f:
            cache[key] = Image.frombytes("RGB", (job["width"], job["height"]), f.read())
    out = cache[key].resize(tuple(job["size"]), Image.BILINEAR, box=tuple(job["box"]))
    with open(job["output"], "wb") as f:
        f.write(out.tobytes())
print(f"pillow {Image.__version__ if hasattr(Image, '__version__') else ''}: {len(jobs)} resizes")
