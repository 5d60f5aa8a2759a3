"""CUDA IPC delivery: runs only where a GPU, CuPy and a GPU-enabled server are present (the
device machine's check); skipped elsewhere with the reason."""

from __future__ import annotations

import numpy as np
import pytest

import augserve
from augserve import Mix, PipelineSpec

from conftest import Server

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (CUDA IPC needs a GPU client)")


def test_cuda_ipc_batches_equal_inline_and_never_touch_the_host(tmp_path):
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            pytest.skip("no CUDA device")
    except cupy.cuda.runtime.CUDARuntimeError as e:
        pytest.skip(f"no CUDA device ({e})")
    s = Server(tmp_path, env={"AUGSERVE_DEVICE": "gpu"})
    s.start()
    try:
        with augserve.Client(s.uds) as c:
            info = c.info()
            assert "cuda_ipc" in info.transports, info.gpu_unavailable_reason
            spec = PipelineSpec(mix=Mix(mixup_alpha=0.2), dtype="float16")
            want = [np.array(b.images) for b in c.stream("demo", spec, batch_size=32, seed=4, epochs=1)]
            stream = c.stream("demo", spec, batch_size=32, seed=4, epochs=1, transport="cuda_ipc")
            got = []
            for b in stream:
                assert isinstance(b.images, cupy.ndarray)
                # The message carries a slot reference, not the tensor: no host round trip.
                assert len(b.raw) < b.images.nbytes // 100
                got.append(cupy.asnumpy(b.images))
            assert stream.transport == "cuda_ipc", stream.fallback_reason
        assert len(got) == len(want) == 10
        for g, w in zip(got, want):
            assert np.array_equal(g, w)
    finally:
        s.stop()
