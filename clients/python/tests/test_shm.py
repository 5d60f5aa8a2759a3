"""The shared-memory transport through the Python client, against the real server binary."""

from __future__ import annotations

import mmap
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import augserve
from augserve import Mix, PipelineSpec

from conftest import Server
from test_stream import record

SPEC = PipelineSpec(mix=Mix(mixup_alpha=0.2, cutmix_alpha=1.0), dtype="float16")


@pytest.fixture(scope="module")
def shm_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("shm")
    shm_dir = work / "rings"
    shm_dir.mkdir()
    s = Server(work, env={"AUGSERVE_SHM_DIR": str(shm_dir)})
    s.shm_dir = shm_dir
    s.start()
    yield s
    assert s.stop() == 0


def rings(s) -> list[str]:
    return [p.name for p in s.shm_dir.iterdir() if p.name.startswith("augserve-")]


def wait_for(cond, timeout=5.0) -> bool:
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout:
            return False
        time.sleep(0.02)
    return True


def test_shm_batches_equal_inline_ones_and_view_the_ring(shm_server):
    with augserve.Client(shm_server.uds) as c:
        assert c.info().transports == ["inline", "shm"]
        want = [record(b) for b in c.stream("demo", SPEC, batch_size=40, seed=5, epochs=2)]
        got = []
        stream = c.stream("demo", SPEC, batch_size=40, seed=5, epochs=2, transport="shm")
        for b in stream:
            assert b.slot is not None
            assert not b.images.flags.writeable and not b.images.flags.owndata
            base = b.images
            while getattr(base, "base", None) is not None:
                base = base.base
            if isinstance(base, memoryview):
                base = base.obj
            assert isinstance(base, mmap.mmap), type(base)
            got.append(record(b))
        assert stream.transport == "shm" and stream.fallback_reason == ""
    assert len(want) == 16 and got == want
    assert wait_for(lambda: not rings(shm_server)), rings(shm_server)


def test_slots_are_reused_after_release_and_the_stream_waits_without(shm_server):
    with augserve.Client(shm_server.uds) as c:
        s = c.stream("demo", SPEC, batch_size=16, epochs=0, transport="shm", slots=2, auto_release=False)
        a, b = next(s), next(s)
        assert a.slot.slot != b.slot.slot
        first_pixels = np.array(a.images)
        got: list = []
        t = threading.Thread(target=lambda: got.append(next(s)), daemon=True)
        t.start()
        t.join(0.8)
        assert t.is_alive(), "a third batch arrived while both slots were held"
        assert np.array_equal(np.asarray(a.images), first_pixels), "a held slot was overwritten"
        a.release()
        a.release()  # the second time is a no-op
        t.join(10)
        assert got and got[0].slot.slot == a.slot.slot and got[0].slot.generation > b.slot.generation
        s.close()
        # auto_release: slots cycle with the default ring.
        seen = [x.slot.slot for _, x in zip(range(8), c.stream("demo", SPEC, batch_size=16, epochs=0, transport="shm"))]
        assert len(set(seen)) > 1
    assert wait_for(lambda: not rings(shm_server)), rings(shm_server)


def test_a_client_killed_holding_slots_leaks_nothing(shm_server, tmp_path):
    script = textwrap.dedent(f"""
        import sys, augserve
        c = augserve.Client({shm_server.uds!r})
        s = c.stream("demo", batch_size=16, epochs=0, transport="shm", slots=3, auto_release=False)
        held = [next(s), next(s), next(s)]
        print("holding", flush=True)
        sys.stdin.read()
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "holding"
        assert len(rings(shm_server)) == 1
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    assert wait_for(lambda: not rings(shm_server)), "the dead client's ring was not reclaimed"
    with augserve.Client(shm_server.uds) as c:
        assert sum(len(b) for b in c.stream("demo", batch_size=64, epochs=1, transport="shm")) == 320


def test_fallbacks_are_reported(tmp_path):
    s = Server(tmp_path, env={"AUGSERVE_SHM_DIR": ""})
    s.start()
    try:
        with augserve.Client(s.uds) as c:
            assert c.info().transports == ["inline"]
            stream = c.stream("demo", batch_size=32, epochs=1, transport="shm")
            b = next(stream)
            assert stream.transport == "inline" and "shm_dir" in stream.fallback_reason
            assert b.slot is None and b.images.shape == (32, 3, 224, 224)
            stream.close()
            with pytest.raises(ValueError, match="transport"):
                c.stream("demo", transport="carrier-pigeon")
    finally:
        s.stop()


def test_torch_dataset_over_shm_equals_inline(shm_server):
    torch = pytest.importorskip("torch")
    from augserve.torch import AugServeIterableDataset

    def epoch(transport):
        ds = AugServeIterableDataset(shm_server.uds, "demo", SPEC, batch_size=64, seed=3, transport=transport)
        return [(x.clone(), y) for x, y in ds]

    a, b = epoch("inline"), epoch("shm")
    assert len(a) == len(b) == 5
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb)
