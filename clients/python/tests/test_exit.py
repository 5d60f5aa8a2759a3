"""No augserve object keeps a process alive: a script that ends holding an open iterator (at its
end, by an exception, on Ctrl-C) exits within a second of the bare interpreter's own exit, and an
iterator dropped mid-run cancels its server stream. The server here serves one stream at a time, so a stream left open would
refuse the next one."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time

import pytest

import augserve
from conftest import Server

CHILD = r"""
import sys, time
import augserve
mode, addr = sys.argv[1], sys.argv[2]
spec = augserve.PipelineSpec(width=32, height=32, dtype="uint8")
if mode.startswith("torch"):
    from augserve.torch import AugServeIterableDataset
    it = iter(AugServeIterableDataset(addr, "demo", spec, batch_size=8))
else:  # epochs=0: a stream that never ends by itself
    it = augserve.Client(addr).stream("demo", spec, batch_size=8, epochs=0)
batch = next(it)
print("ready", flush=True)
if mode.endswith("-raise"):
    raise RuntimeError("the training step failed")
if mode.endswith("-sigint"):
    for batch in it:  # until the parent's SIGINT
        time.sleep(0.05)
"""

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = os.environ.get("AUGSERVE_REQUIRE_PEERS") == "1"  # then the child fails loudly


@pytest.fixture(scope="module")
def one_stream(tmp_path_factory) -> Server:
    s = Server(tmp_path_factory.mktemp("one-stream"), ["--max-concurrent-streams", "1"])
    s.start()
    yield s
    s.stop()


def the_stream_is_free(server: Server, within_s: float = 5.0) -> float:
    """Seconds until a new stream is accepted (the only permit is back); fails past `within_s`."""
    start = time.monotonic()
    with augserve.Client(server.uds) as c:
        while True:
            try:
                with c.stream("demo", augserve.PipelineSpec(width=16, height=16), batch_size=4, epochs=1) as s:
                    next(s)
                return time.monotonic() - start
            except augserve.ResourceExhaustedError:
                if time.monotonic() - start > within_s:
                    pytest.fail(f"the earlier stream still holds the server's only permit after {within_s} s")
                time.sleep(0.05)


MODES = ["stream", "stream-raise", "stream-sigint", "torch", "torch-raise", "torch-sigint"]

BARE_CHILD = r"""
import sys
if sys.argv[1].startswith("torch"):
    import torch  # noqa: F401
print("ready", flush=True)
"""


def bare_exit_s(mode: str) -> float:
    """How long the same interpreter takes to exit with nothing of augserve's held: torch's own
    teardown is most of a second on a 2-core VM (1.07 s there once, failing the bound), and it
    is not what this test is about."""
    child = subprocess.Popen([sys.executable, "-c", BARE_CHILD, mode], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        start = time.monotonic()
        child.wait(timeout=20)
        return time.monotonic() - start
    finally:
        child.kill()


@pytest.mark.parametrize("mode", MODES)
def test_a_script_holding_an_iterator_exits_within_a_second(one_stream, mode):
    if mode.startswith("torch") and not HAVE_TORCH:
        pytest.skip("torch not installed")
    child = subprocess.Popen([sys.executable, "-c", CHILD, mode, one_stream.uds], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        start = time.monotonic()
        if mode.endswith("-sigint"):
            time.sleep(0.2)
            child.send_signal(signal.SIGINT)
        rc = child.wait(timeout=20)
        took = time.monotonic() - start
    finally:
        child.kill()
    err = child.stderr.read()
    bare = bare_exit_s(mode)
    print(f"{mode}: exited {rc} {took:.2f} s after its last line (the bare interpreter: {bare:.2f} s)")
    assert took - bare < 1.0, f"{mode}: the process took {took:.1f} s to exit ({bare:.1f} s without augserve)"
    if mode.endswith("-raise"):
        assert rc != 0 and "RuntimeError: the training step failed" in err
    elif mode.endswith("-sigint"):
        assert rc != 0 and "KeyboardInterrupt" in err
    else:
        assert rc == 0, err
    the_stream_is_free(one_stream)


def test_a_dropped_iterator_cancels_its_stream(one_stream):
    c = augserve.Client(one_stream.uds)
    it = c.stream("demo", augserve.PipelineSpec(width=32, height=32), batch_size=8, epochs=0)
    next(it)
    with pytest.raises(augserve.ResourceExhaustedError):
        with augserve.Client(one_stream.uds) as other:
            next(other.stream("demo", batch_size=8, epochs=1))
    del it
    gc.collect()
    print(f"stream permit back {the_stream_is_free(one_stream):.2f} s after the iterator was dropped")
    c.close()


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_a_dropped_dataset_iterator_cancels_its_stream(one_stream):
    from augserve.torch import AugServeIterableDataset

    it = iter(AugServeIterableDataset(one_stream.uds, "demo", augserve.PipelineSpec(width=32, height=32), batch_size=8))
    next(it)
    del it
    gc.collect()
    the_stream_is_free(one_stream)
