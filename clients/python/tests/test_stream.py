"""The Python client against the real server binary."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

import augserve
from augserve import ColorJitter, Mix, PipelineSpec


def sha(b) -> str:
    return hashlib.sha256(b).hexdigest()


def f32(*arrays) -> bytes:
    return b"".join(np.asarray(a, dtype="<f4").tobytes() for a in arrays)


def record(b: augserve.Batch) -> dict:
    """The same record `augserve pull --record` writes for a batch."""
    shape = list(b.images.shape) if len(b) else []
    return {
        "epoch": b.epoch,
        "index": b.index,
        "sample_ids": [int(x) for x in b.sample_ids],
        "labels_a": [int(x) for x in b.labels_a],
        "labels_b": [int(x) for x in b.labels_b],
        "num_classes": b.num_classes,
        "shape": shape,
        "dtype": {"uint8": 1, "float16": 2, "float32": 3}[b.dtype] if len(b) else 0,
        "layout": {"nchw": 1, "nhwc": 2}[b.layout] if len(b) else 0,
        "device": b.device,
        "images_sha256": sha(b.images.tobytes() if not len(b) else memoryview(b.images).cast("B")),
        "lam_sha256": sha(f32(b.lam)),
        "soft_targets_sha256": sha(f32(b.soft_targets.ravel() if b.soft_targets is not None else [])),
        "stats_sha256": sha(
            f32(
                b.stats.mean,
                b.stats.std,
                b.stats.mad,
                b.stats.clipped,
                b.stats.percentiles.ravel() if b.stats.percentiles is not None else [],
            )
        ),
        "errors": [[e.sample_id, e.code, e.source] for e in b.errors],
    }


MIXED_TOML = """
[color]
brightness = 0.4
contrast = 0.4
saturation = 0.4

[mix]
mixup_alpha = 0.2
cutmix_alpha = 1.0
label_smoothing = 0.1
num_classes = 10

[output]
dtype = "float16"
layout = "nhwc"
"""
MIXED_SPEC = PipelineSpec(
    color=ColorJitter(0.4, 0.4, 0.4),
    mix=Mix(mixup_alpha=0.2, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=10),
    dtype="float16",
    layout="nhwc",
)

DCT_TOML = """
dct_scaling = true

[size]
width = 64
height = 64

[output]
dtype = "uint8"
"""
DCT_SPEC = PipelineSpec(width=64, height=64, dtype="uint8", dct_scaling=True)


@pytest.mark.parametrize(
    "name,toml,spec",
    [("default", None, PipelineSpec()), ("mixed", MIXED_TOML, MIXED_SPEC), ("dct", DCT_TOML, DCT_SPEC)],
)
def test_two_epochs_match_the_rust_client_byte_for_byte(server, client, tmp_path, name, toml, spec):
    out = tmp_path / "rust.jsonl"
    args = ["--dataset", "demo", "--batch-size", "48", "--epochs", "2", "--seed", "11", "--record", str(out)]
    if toml:
        (tmp_path / "spec.toml").write_text(toml)
        args += ["--spec", str(tmp_path / "spec.toml")]
    server.pull(*args)
    rust = [json.loads(line) for line in out.read_text().splitlines()]
    py = [record(b) for b in client.stream("demo", spec, batch_size=48, seed=11, epochs=2)]
    assert len(py) == len(rust) == 2 * math.ceil(320 / 48)
    for r, p in zip(rust, py):
        assert p == r, f"batch {r['epoch']}/{r['index']} differs"
    if name == "mixed":
        assert any(sum(x != y for x, y in zip(r["labels_a"], r["labels_b"])) for r in rust), "nothing was mixed"
    if name == "dct":  # the demo's crops of 128+ pixels are decoded at 1/2 or less: other pixels
        exact = [record(b) for b in client.stream("demo", replace(spec, dct_scaling=False), batch_size=48, seed=11)]
        assert exact[0] != py[0]


def root_base(a: np.ndarray):
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a


def test_a_batch_says_how_its_images_were_decoded(client):
    spec = PipelineSpec(width=64, height=64, dtype="uint8", dct_scaling=True)
    with client.stream("demo", spec, batch_size=32) as s:
        b = next(s)
    t = b.timings
    assert t["decoded_by_region"] == len(b), t  # the demo's JPEGs: libjpeg-turbo, by region
    assert 0 < t["decoded_scaled"] <= len(b) and "decoded_whole" not in t  # 0 is left out
    # gpu_busy_ms: what the batch cost the GPU; none on the CPU (left out, as every 0).
    assert "gpu_busy_ms" not in t and t["total_ms"] > 0, t


@pytest.mark.parametrize("dtype,itemsize", [("uint8", 1), ("float16", 2), ("float32", 4)])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_images_are_a_zero_copy_view_with_the_right_shape_and_dtype(client, dtype, itemsize, layout):
    spec = PipelineSpec(width=96, height=64, dtype=dtype, layout=layout)
    with client.stream("demo", spec, batch_size=16, seed=3) as stream:
        b = next(stream)
    shape = (16, 3, 64, 96) if layout == "nchw" else (16, 64, 96, 3)
    assert b.images.shape == shape
    assert b.images.dtype == np.dtype(dtype) and b.dtype == dtype and b.layout == layout
    # The array owns nothing: it views the received message itself.
    assert not b.images.flags.owndata and not b.images.flags.writeable
    assert root_base(b.images) is b.raw
    assert b.images.nbytes == math.prod(shape) * itemsize
    # The server aligns the tensor within the message; CPython puts bytes data on 16 bytes.
    assert b.images.ctypes.data % 16 == 0 and b.images.flags.aligned


@pytest.mark.parametrize("size,batch,atol", [(32, 16, 1e-5), (96, 32, 0.05)])
def test_percentiles_agree_with_numpy_on_the_received_tensor(client, size, batch, atol):
    # 16 images of 32x32 are 16,384 values per channel: the server sorts them all (exact);
    # 32 of 96x96 are 294,912, of which it samples 16,384 (an estimate).
    spec = PipelineSpec(width=size, height=size, dtype="float32", layout="nchw")
    with client.stream("demo", spec, batch_size=batch, seed=9) as s:
        b = next(s)
    assert b.stats.percentile_levels.tolist() == [1, 5, 50, 95, 99]
    assert b.stats.percentiles.shape == (5, 3)
    want = np.percentile(b.images.transpose(1, 0, 2, 3).reshape(3, -1), [1, 5, 50, 95, 99], axis=1)
    np.testing.assert_allclose(b.stats.percentiles, want, atol=atol)
    assert (np.diff(b.stats.percentiles, axis=0) >= 0).all()


def test_layouts_and_dtypes_carry_the_same_pixels(client):
    def first(dtype, layout):
        spec = PipelineSpec(width=80, height=72, dtype=dtype, layout=layout)
        with client.stream("demo", spec, batch_size=8, seed=5) as s:
            return next(s).images

    u8 = first("uint8", "nchw")
    np.testing.assert_array_equal(first("uint8", "nhwc").transpose(0, 3, 1, 2), u8)
    mean = np.array(augserve.IMAGENET_MEAN, np.float32)[None, :, None, None]
    std = np.array(augserve.IMAGENET_STD, np.float32)[None, :, None, None]
    want = (u8.astype(np.float32) / 255 - mean) / std
    np.testing.assert_allclose(first("float32", "nchw"), want, atol=1e-5)
    np.testing.assert_allclose(first("float16", "nhwc").transpose(0, 3, 1, 2).astype(np.float32), want, atol=4e-3)


def test_unpacking_a_batch_does_not_copy_its_tensor(client):
    spec = PipelineSpec(dtype="uint8")
    with client.stream("demo", spec, batch_size=64, seed=1, prefetch=1) as stream:
        next(stream)  # connected, server warmed up
        tracemalloc.start()
        b = next(stream)
        _, receive_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        again = augserve.Batch.from_bytes(b.raw)
        _, unpack_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    nbytes = b.images.nbytes
    assert nbytes == 64 * 3 * 224 * 224
    # Unpacking allocates only the small fields: the tensor stays where it was received.
    assert unpack_peak - base < 0.02 * nbytes, f"unpacking took {unpack_peak - base} bytes"
    assert root_base(again.images) is b.raw
    # Receiving: grpcio assembles the message in a bytearray, then copies it into the bytes
    # object it hands us (transient 2x, inside grpcio); nothing more on our side.
    assert receive_peak < 2.2 * nbytes, f"receive peak {receive_peak} bytes for {nbytes}"


@pytest.mark.parametrize("tail", ["uneven", "pad", "drop"])
def test_four_ranks_partition_an_epoch(client, tail):
    ranks = []
    for rank in range(4):
        ids = []
        for b in client.stream("demo", PipelineSpec(width=32, height=32), batch_size=20, seed=9, rank=rank, world_size=4, tail=tail):
            assert b.epoch == 0
            ids.extend(int(i) for i in b.sample_ids)
        ranks.append(ids)
    flat = [i for ids in ranks for i in ids]
    # 320 samples: 4 divides it, so every policy gives the exact partition.
    assert sorted(flat) == list(range(320))
    assert all(len(ids) == 80 for ids in ranks)



def test_uneven_world_sizes_cover_every_sample_once(client):
    for world in (3, 7):
        seen = []
        for rank in range(world):
            for b in client.stream("demo", PipelineSpec(width=32, height=32), batch_size=50, seed=2, rank=rank, world_size=world, tail="uneven"):
                seen.extend(int(i) for i in b.sample_ids)
        assert sorted(seen) == list(range(320)), world


def test_server_errors_raise_typed_exceptions_naming_the_problem(client):
    with pytest.raises(augserve.NotFoundError, match="no-such-dataset"):
        next(client.stream("no-such-dataset"))
    with pytest.raises(augserve.InvalidArgumentError, match="width"):
        next(client.stream("demo", PipelineSpec(width=0)))
    with pytest.raises(augserve.InvalidArgumentError, match="flip_prob"):
        next(client.stream("demo", PipelineSpec(flip_prob=float("nan"))))
    with pytest.raises(augserve.InvalidArgumentError, match="normalize.std"):
        next(client.stream("demo", PipelineSpec(normalize=augserve.Normalize(std=(0.2, 0.0, 0.2)))))
    with pytest.raises(augserve.InvalidArgumentError, match="rank"):
        next(client.stream("demo", rank=4, world_size=4))
    with pytest.raises((augserve.InvalidArgumentError, augserve.ResourceExhaustedError), match="batch_size"):
        next(client.stream("demo", batch_size=10**9))
    # Caught before sending: names the field and the accepted values.
    with pytest.raises(ValueError, match="dtype.*uint8"):
        next(client.stream("demo", PipelineSpec(dtype="int7")))
    # Every error is an AugServeError carrying the code.
    try:
        next(client.stream("nope"))
    except augserve.AugServeError as e:
        assert e.code == "NOT_FOUND" and "nope" in e.details and str(e).startswith("NOT_FOUND: ")


def test_unreachable_server_raises_unavailable(tmp_path):
    with augserve.Client(f"unix://{tmp_path}/absent.sock", timeout=2) as c:
        with pytest.raises(augserve.UnavailableError):
            c.info()
        with pytest.raises(augserve.UnavailableError):
            next(c.stream("demo", resume=False))


def test_augment_reports_bad_images_per_image(client, server):
    jpegs = sorted((server.cache).rglob("*.jpg"))[:5]
    assert len(jpegs) == 5, "demo dataset not in the cache"
    images = [p.read_bytes() for p in jpegs]
    images.insert(2, b"definitely not a jpeg")
    b = client.augment(images, PipelineSpec.center_crop(64, dtype="uint8"), labels=[1, 2, 3, 4, 5, 6], seed=4)
    assert b.images.shape == (5, 3, 64, 64)
    assert [int(i) for i in b.sample_ids] == [0, 1, 3, 4, 5]
    assert [int(x) for x in b.labels_a] == [1, 2, 4, 5, 6]
    assert len(b.errors) == 1 and b.errors[0].sample_id == 2 and b.errors[0].code == "unsupported_format"
    # Stateless and seeded: the same request gives the same bytes.
    again = client.augment(images, PipelineSpec.center_crop(64, dtype="uint8"), labels=[1, 2, 3, 4, 5, 6], seed=4)
    np.testing.assert_array_equal(again.images, b.images)
    with pytest.raises(augserve.FailedPreconditionError, match="request\\[2\\]"):
        client.augment(images, PipelineSpec(on_error="fail"))


def test_datasets_and_info(client):
    (demo,) = [d for d in client.datasets() if d.name == "demo"]
    assert demo.samples == 320 and demo.num_classes == 10 and len(demo.classes) == 10
    info = client.info()
    assert info.version and info.worker_threads >= 1
    assert info.limits["max_batch_size"] >= 256
    assert "float16" in [d.lower() for d in info.dtypes] or info.dtypes
    # The test server runs on the CPU: libjpeg-turbo decodes, and the note says why not the GPU.
    assert info.jpeg_decoder == "libjpeg-turbo" and info.jpeg_decoder_note == "gpu_decode is off"


def test_tcp_gives_the_same_batches_as_uds(server):
    spec = PipelineSpec(width=40, height=40, dtype="uint8")
    with augserve.Client(server.uds) as a, augserve.Client(server.tcp) as b:
        for x, y in zip(a.stream("demo", spec, 64, seed=8), b.stream("demo", spec, 64, seed=8)):
            assert record(x) == record(y)


def test_prefetcher_runs_ahead_and_passes_errors_on():
    seen = []

    def source():
        for i in range(5):
            seen.append(i)
            yield i
        raise RuntimeError("boom")

    it = augserve.prefetch(source(), depth=2, transform=lambda x: x * 10)
    assert next(it) == 0
    got = [next(it) for _ in range(4)]
    assert got == [10, 20, 30, 40]
    with pytest.raises(RuntimeError, match="boom"):
        next(it)


def test_closing_a_stream_cancels_it_on_the_server(client):
    stream = client.stream("demo", PipelineSpec(width=32, height=32), batch_size=8, epochs=0)
    next(stream)
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)
    # The server keeps serving.
    assert client.info().version


def test_a_stream_resumes_after_the_server_restarts(tmp_path):
    from conftest import Server

    srv = Server(tmp_path)
    srv.start()
    spec = PipelineSpec(width=48, height=48, dtype="uint8")
    try:
        with augserve.Client(srv.uds) as c:
            want = [record(b) for b in c.stream("demo", spec, batch_size=40, seed=21, epochs=2)]
            stream = c.stream("demo", spec, batch_size=40, seed=21, epochs=2, prefetch=1)
            got = []
            for b in stream:
                got.append(record(b))
                if len(got) == 5:  # mid first epoch: the server dies, then comes back
                    srv.kill()
                    threading.Timer(0.5, srv.start).start()
            assert stream.reconnects == 1
            assert got == want
    finally:
        srv.stop()


def test_a_token_protected_server_refuses_calls_without_the_token(tmp_path):
    from conftest import Server

    srv = Server(tmp_path, env={"AUGSERVE_TOKENS": "py-secret"})
    srv.start()
    try:
        with augserve.Client(srv.uds) as c:
            with pytest.raises(augserve.UnauthenticatedError, match="Bearer"):
                c.datasets()
            with pytest.raises(augserve.UnauthenticatedError):
                next(c.stream("demo"))
        with augserve.Client(srv.uds, token="wrong") as c:
            with pytest.raises(augserve.UnauthenticatedError, match="invalid token"):
                c.info()
        with augserve.Client(srv.uds, token="py-secret") as c:
            assert [d.name for d in c.datasets()] == ["demo"]
            assert len(next(c.stream("demo", PipelineSpec(width=32, height=32), batch_size=4))) == 4
    finally:
        srv.stop()
