"""Fixtures: a real `atoll server` process on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

REPO = Path(__file__).resolve().parents[2]


def atoll_binary() -> str:
    """The atoll binary: ATOLL_BIN, else built from this checkout."""
    env = os.environ.get("ATOLL_BIN")
    if env:
        return env
    out = REPO / "bin" / "atoll"
    subprocess.run(["go", "build", "-o", str(out), "./cmd/atoll"], cwd=REPO, check=True)
    return str(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One running atoll server."""

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None):
        self.data_dir = data_dir
        self.extra_args = extra_args or []
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [atoll_binary(), "server", "--listen", self.address, "--data-dir", str(self.data_dir),
             "--log-level", os.environ.get("ATOLL_LOG_LEVEL", "debug"), *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._log = log
        channel = grpc.insecure_channel(self.address)
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            self.stop()
            raise RuntimeError(f"atoll server did not start; log:\n{self.log()}") from None
        finally:
            channel.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = Server(tmp_path_factory.mktemp("atoll") / "data").start()
    old = os.environ.get("ATOLL_HOST")
    os.environ["ATOLL_HOST"] = srv.address
    yield srv
    if old is None:
        os.environ.pop("ATOLL_HOST", None)
    else:
        os.environ["ATOLL_HOST"] = old
    srv.stop()
    assert "panic" not in srv.log(), srv.log()


@pytest.fixture
def run_script(server: Server, tmp_path: Path):
    """Runs a Python script in a fresh interpreter against the server."""

    def run(source: str, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
        script = tmp_path / "script.py"
        script.write_text(source)
        env = {**os.environ, "ATOLL_HOST": server.address, "PYTHONUNBUFFERED": "1"}
        return subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=timeout, env=env, **popen
        )

    return run


def live_workers(server: Server) -> list:
    from atoll.v1 import atoll_pb2 as pb
    from atoll.v1 import atoll_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.address) as channel:
        return list(pb_grpc.AdminStub(channel).ListWorkers(pb.ListWorkersRequest()).workers)


def wait_until(predicate, timeout: float = 10, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


if shutil.which("go") is None and not os.environ.get("ATOLL_BIN"):
    raise RuntimeError("the tests need Go to build atoll, or ATOLL_BIN pointing at a built binary")
