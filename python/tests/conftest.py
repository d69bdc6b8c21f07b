"""Fixtures: a real `atoll server` process on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

# A process that forks (subprocess with a preexec_fn, multiprocessing)
# would have gRPC's fork handlers restart its poller in the child, where
# close_fds closes the poller's epoll descriptor before exec, and the
# child dies in gRPC's core ("epoll_wait ... Bad file descriptor",
# grpc/grpc#43055). Read once, when grpc is first imported. Tests start
# callers that must see Ctrl-C with with_sigint, not a preexec_fn.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import grpc  # noqa: E402
import pytest

REPO = Path(__file__).resolve().parents[2]


def atoll_binary() -> str:
    """The atoll binary: ATOLL_BIN, else built from this checkout."""
    env = os.environ.get("ATOLL_BIN")
    if env:
        return env
    out = REPO / "bin" / "atoll"
    subprocess.run(["go", "build", "-o", str(out), "./cmd/atoll"], cwd=REPO, check=True)
    # The slim agent beside it, from the same build: the server passes over
    # an older one as stale and runs `atoll worker` (10 MiB more a worker).
    subprocess.run(["go", "build", "-o", str(out.parent / "atoll-agent"), "./cmd/atoll-agent"], cwd=REPO, check=True)
    os.environ["ATOLL_BIN"] = str(out)  # for host=local and zero-setup, in this process and its children
    return str(out)


def with_sigint(argv: list[str]) -> list[str]:
    """argv, run with SIGINT at its default, as a terminal's Ctrl-C finds a
    program: a test runner started in the background by a shell without
    job control inherits SIGINT ignored, exec keeps it so, and Python then
    never raises KeyboardInterrupt. coreutils' env resets it between fork
    and exec; a preexec_fn would run Python code in a forked child of this
    multi-threaded process, where a lock another thread held at the fork
    hangs it for good (it did, in a chaos test)."""
    return [shutil.which("env") or "/usr/bin/env", "--default-signal=INT", *argv]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unmount_under(directory: Path) -> None:
    """Detaches what is still mounted below directory: the account volumes
    of a server a test killed, which never unmounted them."""
    prefix = str(directory.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        # Field 5 is the mount point, with space, tab, newline and backslash
        # written as octal escapes.
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    for point in reversed(points):  # the innermost first
        if point.startswith(prefix):
            subprocess.run(["umount", "--lazy", point], check=True)


class Server:
    """One running atoll server."""

    # Seconds start() waits for the server to answer.
    start_timeout = 30

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None, tls_ca: Path | None = None):
        self.data_dir = data_dir
        self.extra_args = extra_args or []
        self.tls_ca = tls_ca
        # A TLS certificate names "localhost"; plain servers use the address.
        self.address = f"{'localhost' if tls_ca else '127.0.0.1'}:{free_port()}"
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.proc: subprocess.Popen | None = None

    def create_key(self, account: str = "default") -> tuple[str, str]:
        """Creates an API key with `atoll keys create`; returns (id, secret)."""
        import json

        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            [atoll_binary(), "keys", "create", "--data-dir", str(self.data_dir), "--account", account, "--json"],
            check=True, capture_output=True, text=True,
        ).stdout
        key = json.loads(out)
        return key["key_id"], key["key_secret"]

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
        if self.tls_ca:
            creds = grpc.ssl_channel_credentials(root_certificates=self.tls_ca.read_bytes())
            channel = grpc.secure_channel(self.address, creds)
        else:
            channel = grpc.insecure_channel(self.address)
        try:
            grpc.channel_ready_future(channel).result(timeout=self.start_timeout)
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
        unmount_under(self.data_dir)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="session", autouse=True)
def isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory):
    """Keeps the tests away from the user's own credentials file and local
    server: config and data directories are the session's own, and no test
    starts a local server unless it asks to."""
    home = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "ATOLL_NO_AUTOSTART")}
    os.environ.update(XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"), ATOLL_NO_AUTOSTART="1")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A server for the session, with a key of account "default" in the
    environment (ATOLL_KEY_ID, ATOLL_KEY_SECRET) and ATOLL_HOST pointing at it."""
    srv = Server(tmp_path_factory.mktemp("atoll") / "data")
    key_id, secret = srv.create_key()
    srv.start()
    saved = {k: os.environ.get(k) for k in ("ATOLL_HOST", "ATOLL_KEY_ID", "ATOLL_KEY_SECRET")}
    os.environ.update(ATOLL_HOST=srv.address, ATOLL_KEY_ID=key_id, ATOLL_KEY_SECRET=secret)
    yield srv
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    srv.stop()
    assert "panic" not in srv.log(), srv.log()


def key_metadata() -> tuple[tuple[str, str], ...]:
    return (("x-atoll-key-id", os.environ["ATOLL_KEY_ID"]), ("x-atoll-key-secret", os.environ["ATOLL_KEY_SECRET"]))


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
        return list(pb_grpc.AdminStub(channel).ListWorkers(pb.ListWorkersRequest(), metadata=key_metadata()).workers)


def server_status(server: Server):
    from atoll.v1 import atoll_pb2 as pb
    from atoll.v1 import atoll_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.address) as channel:
        return pb_grpc.AdminStub(channel).Status(pb.StatusRequest(), metadata=key_metadata())


def require_sandbox(server: Server) -> None:
    """Skips unless the server runs workers in a real sandbox. CI sets
    ATOLL_REQUIRE_SANDBOX=1, which turns the skip into a failure."""
    status = server_status(server)
    if status.sandbox == "process":
        reason = f"workers are not sandboxed on this host: {status.sandbox_warning}"
        if os.environ.get("ATOLL_REQUIRE_SANDBOX") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def worker_identity():
    """A value unique to the worker process that runs it: PIDs repeat across
    sandboxes, which have PID namespaces of their own."""
    import builtins
    import os
    import uuid

    if not hasattr(builtins, "_atoll_test_identity"):
        builtins._atoll_test_identity = f"{os.getpid()}-{uuid.uuid4().hex}"
    return builtins._atoll_test_identity


def wait_until(predicate, timeout: float = 10, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


if shutil.which("go") is None and not os.environ.get("ATOLL_BIN"):
    raise RuntimeError("the tests need Go to build atoll, or ATOLL_BIN pointing at a built binary")
