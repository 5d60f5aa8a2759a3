"""The shutdown contract (proto: StreamBatches), with a real SIGTERM to the server binary: open
streams finish within the grace period; a stream still open after it ends with UNAVAILABLE,
never OK; the client resumes it on the restarted server with every sample exactly once."""

from __future__ import annotations

import signal
import threading
import time

import pytest

import augserve
from conftest import Server

# 2.4 MB batches of 16: the transport cannot hold the epoch, so a cut lands mid-epoch.
SPEC = augserve.PipelineSpec(width=224, height=224, dtype="uint8")
SAMPLES = 320


def sigterm_then(server: Server, after=None) -> threading.Thread:
    """SIGTERMs `server`; once it has exited, checks its exit code and runs `after`."""
    proc = server.proc

    def run():
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        server.proc = None
        if after is not None:
            after()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_streams_open_at_sigterm_finish_within_the_grace_period(tmp_path):
    srv = Server(tmp_path)  # grace period 10 s
    srv.start()
    ids = []
    with augserve.Client(srv.uds) as c:
        stream = c.stream("demo", SPEC, batch_size=16, epochs=1, seed=5, resume=False)
        for k, b in enumerate(stream):
            ids.extend(int(i) for i in b.sample_ids)
            if k == 1:
                stopping = sigterm_then(srv)
            time.sleep(0.15)  # a slow trainer: 20 batches take 3 s
    stopping.join()
    assert sorted(ids) == list(range(SAMPLES)), "the stream ended OK without the whole epoch"


def test_a_stream_cut_by_the_grace_period_ends_unavailable(tmp_path):
    srv = Server(tmp_path, ["--grace-period-s", "0.5"])
    srv.start()
    got = 0
    with augserve.Client(srv.uds) as c:
        stream = c.stream("demo", SPEC, batch_size=16, epochs=1, seed=5, resume=False)
        with pytest.raises(augserve.UnavailableError) as cut:
            for k, b in enumerate(stream):
                got += len(b)
                if k == 1:
                    stopping = sigterm_then(srv)
                time.sleep(0.1)  # 20 batches would take 2 s
    stopping.join()
    assert got < SAMPLES
    assert "shutting down" in str(cut.value) and "start_batch" in str(cut.value), cut.value
    assert "stream cut by the shutdown" in srv.log.read_text()


def test_the_client_resumes_a_cut_stream_on_the_restarted_server(tmp_path):
    srv = Server(tmp_path, ["--grace-period-s", "0.5"])
    srv.start()
    ids = []
    with augserve.Client(srv.uds) as c:
        stream = c.stream("demo", SPEC, batch_size=16, epochs=1, seed=5)  # resume is the default
        for k, b in enumerate(stream):
            ids.extend(int(i) for i in b.sample_ids)
            if k == 1:
                restarting = sigterm_then(srv, after=srv.start)
            time.sleep(0.1)
    restarting.join()
    srv.stop()
    assert stream.reconnects >= 1, "the stream was never cut"
    assert len(ids) == SAMPLES and sorted(ids) == list(range(SAMPLES)), "a sample lost or repeated"
