"""Fixtures: a real augserve server binary on a Unix socket and TCP, serving the demo dataset."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

import augserve

REPO = pathlib.Path(__file__).resolve().parents[3]


def augserve_bin() -> pathlib.Path:
    """The server binary: $AUGSERVE_BIN, else the one `cargo test` / `cargo build` left."""
    env = os.environ.get("AUGSERVE_BIN")
    candidates = [pathlib.Path(env)] if env else [REPO / "target/debug/augserve", REPO / "target/release/augserve"]
    for c in candidates:
        if c.is_file():
            return c
    pytest.fail(f"no augserve binary at {candidates}: run `cargo build` (or set AUGSERVE_BIN)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """An `augserve serve` process; restartable on the same socket."""

    def __init__(self, workdir: pathlib.Path, extra_args: list[str] | None = None, env: dict | None = None):
        self.workdir = workdir
        self.sock = workdir / "augserve.sock"
        self.port = free_port()
        self.uds = f"unix://{self.sock}"
        self.tcp = f"127.0.0.1:{self.port}"
        self.cache = workdir / "cache"
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "server.log"

    def start(self) -> None:
        env = {**os.environ, "AUGSERVE_CACHE_DIR": str(self.cache), "AUGSERVE_LOG": "warn", **self.env}
        args = [str(augserve_bin()), "serve", "--listen-uds", str(self.sock), "--listen-tcp", self.tcp]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args + self.extra_args, env=env, stdout=log, stderr=log)
        with augserve.Client(self.uds, token=self.env.get("AUGSERVE_TOKENS")) as c:
            try:
                c.wait_ready(timeout=60)
            except augserve.UnavailableError:
                self.stop()
                pytest.fail(f"server did not start; log:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def pull(self, *args: str) -> subprocess.CompletedProcess:
        """Runs the Rust client (`augserve pull`) against this server."""
        return subprocess.run(
            [str(augserve_bin()), "pull", "--addr", self.uds, "--quiet", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    s = Server(tmp_path_factory.mktemp("augserve"))
    s.start()
    yield s
    assert s.stop() == 0


@pytest.fixture()
def client(server) -> augserve.Client:
    with augserve.Client(server.uds) as c:
        yield c
