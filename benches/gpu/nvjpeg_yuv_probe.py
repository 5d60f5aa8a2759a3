"""Probe for issue 9's open point: can nvJPEG's hardware engine give planar YUV, and would our
own chroma upsampling then match a libjpeg-style decoder (Pillow / zune-jpeg)?

    python3 benches/gpu/nvjpeg_yuv_probe.py target/gpu-kit/corpus   (on a device machine)

For each 4:2:0 JPEG: nvJPEG (hardware backend, batch of one) decodes to interleaved RGB and to
planar YUV; the YUV planes are upsampled here by replication and by libjpeg's "fancy"
triangle filter, converted to RGB (JFIF), and each result is compared with Pillow's decode
(libjpeg-turbo, fancy upsampling). Prints mean abs differences per variant. Needs CuPy,
Pillow, numpy (all on the device image) and libnvjpeg.
"""

from __future__ import annotations

import ctypes
import pathlib
import sys

import cupy
import numpy as np
from PIL import Image

lib = ctypes.CDLL("libnvjpeg.so.13")


class NvImage(ctypes.Structure):
    _fields_ = [("channel", ctypes.c_void_p * 4), ("pitch", ctypes.c_size_t * 4)]


V = ctypes.c_void_p
lib.nvjpegCreateEx.argtypes = [ctypes.c_int, V, V, ctypes.c_uint, ctypes.POINTER(V)]
lib.nvjpegJpegStateCreate.argtypes = [V, ctypes.POINTER(V)]
lib.nvjpegDecodeBatchedInitialize.argtypes = [V, V, ctypes.c_int, ctypes.c_int, ctypes.c_int]
lib.nvjpegDecodeBatched.argtypes = [V, V, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(NvImage), V]
lib.nvjpegGetImageInfo.argtypes = [V, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
YUV, RGBI = 1, 5


def check(name, r):
    if r != 0:
        raise RuntimeError(f"{name}: status {r}")


def decoder(fmt):
    h, st = V(), V()
    check("create", lib.nvjpegCreateEx(3, None, None, 0, ctypes.byref(h)))
    check("state", lib.nvjpegJpegStateCreate(h, ctypes.byref(st)))
    check("init", lib.nvjpegDecodeBatchedInitialize(h, st, 1, 1, fmt))
    return h, st


def decode(h, st, data, planes):
    """planes: list of (width, height) per output channel; returns numpy arrays."""
    bufs = [cupy.zeros(w * hh, cupy.uint8) for w, hh in planes]
    img = NvImage()
    for c, (w, _) in enumerate(planes):
        img.channel[c] = bufs[c].data.ptr
        img.pitch[c] = w
    ptrs = (ctypes.c_char_p * 1)(data)
    lens = (ctypes.c_size_t * 1)(len(data))
    check("decode", lib.nvjpegDecodeBatched(h, st, ptrs, lens, ctypes.byref(img), None))
    cupy.cuda.runtime.deviceSynchronize()
    return [b.get().reshape(hh, w) for b, (w, hh) in zip(bufs, planes)]


def fancy_h2v2(c, w, h):
    """libjpeg-turbo's h2v2 fancy upsampling (jdsample.c), to w x h."""
    c = c.astype(np.int32)
    up = np.vstack([c[:1], c[:-1]])
    down = np.vstack([c[1:], c[-1:]])
    rows = np.empty((c.shape[0] * 2, c.shape[1]), np.int32)
    rows[0::2] = 3 * c + up
    rows[1::2] = 3 * c + down
    left = np.hstack([rows[:, :1], rows[:, :-1]])
    right = np.hstack([rows[:, 1:], rows[:, -1:]])
    out = np.empty((rows.shape[0], rows.shape[1] * 2), np.int32)
    out[:, 0::2] = (3 * rows + left + 8) >> 4
    out[:, 1::2] = (3 * rows + right + 7) >> 4
    out[:, 0] = (rows[:, 0] * 4 + 8) >> 4
    out[:, -1] = (rows[:, -1] * 4 + 7) >> 4
    return out[:h, :w]


def nearest(c, w, h):
    return np.repeat(np.repeat(c, 2, 0), 2, 1)[:h, :w].astype(np.int32)


def to_rgb(y, cb, cr):
    y, cb, cr = y.astype(np.float64), cb - 128.0, cr - 128.0
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    return np.clip(np.floor(rgb + 0.5), 0, 255)


def main() -> int:
    root = pathlib.Path(sys.argv[1])
    files = sorted(root.rglob("*.jpg"))
    hy, sy = decoder(YUV)
    hr, sr = decoder(RGBI)
    res = {"rgbi": [], "yuv_nearest": [], "yuv_fancy": []}
    worst = {k: (0.0, "") for k in res}
    n = 0
    for f in files:
        data = f.read_bytes()
        nc, ss = ctypes.c_int(), ctypes.c_int()
        ws, hs = (ctypes.c_int * 4)(), (ctypes.c_int * 4)()
        check("info", lib.nvjpegGetImageInfo(hy, data, len(data), ctypes.byref(nc), ctypes.byref(ss), ws, hs))
        if nc.value != 3 or (ws[1], hs[1]) != ((ws[0] + 1) // 2, (hs[0] + 1) // 2):
            continue  # 4:2:0 only
        try:
            ref = np.asarray(Image.open(f).convert("RGB")).astype(np.float64)
            (rgb,) = decode(hr, sr, data, [(ws[0] * 3, hs[0])])
            y, cb, cr = decode(hy, sy, data, [(ws[c], hs[c]) for c in range(3)])
        except RuntimeError as e:
            print(f"{f.name}: {e}")
            continue
        w, h = ws[0], hs[0]
        got = {
            "rgbi": rgb.reshape(h, w, 3).astype(np.float64),
            "yuv_nearest": to_rgb(y, nearest(cb, w, h), nearest(cr, w, h)),
            "yuv_fancy": to_rgb(y, fancy_h2v2(cb, w, h), fancy_h2v2(cr, w, h)),
        }
        for k, v in got.items():
            mad = float(np.abs(v - ref).mean())
            res[k].append(mad)
            if mad > worst[k][0]:
                worst[k] = (mad, f"{f.parent.name}/{f.name}")
        n += 1
    print(f"nvJPEG hardware backend, {n} 4:2:0 images of {root}, against Pillow (libjpeg-turbo):")
    for k, v in res.items():
        a = np.array(v)
        print(f"  {k:12s} mean abs diff: mean {a.mean():.3f}, worst {worst[k][0]:.3f} ({worst[k][1]}), images above 1.5: {(a >= 1.5).sum()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
