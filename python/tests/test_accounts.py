"""Accounts, keys, worker tokens, nested calls, run history, TLS and the
zero-setup local server, against real atoll server processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

import atoll
from atoll import CloudKeyCredentials, isolated, sync_dir
from atoll._host import CloudHost
from conftest import REPO, Server, atoll_binary, free_port, live_workers, wait_until, worker_identity


@pytest.fixture
def no_env_key(monkeypatch):
    monkeypatch.delenv("ATOLL_KEY_ID", raising=False)
    monkeypatch.delenv("ATOLL_KEY_SECRET", raising=False)


def test_missing_key_is_rejected_and_nothing_runs(server, no_env_key, tmp_path):
    marker = tmp_path / "ran"

    @isolated()
    def touch():
        open(marker, "w").close()

    with pytest.raises(atoll.AuthenticationError, match="missing API key"):
        touch()
    assert not marker.exists()


def test_wrong_secret_is_rejected(server, no_env_key):
    key_id, _ = server.create_key()
    f = isolated(credentials=CloudKeyCredentials(key_id, "not-the-secret"))(lambda: 1)
    with pytest.raises(atoll.AuthenticationError, match="invalid API key.*atoll keys create"):
        f()


def test_revoked_key_is_rejected(server, no_env_key):
    key_id, secret = server.create_key()
    f = isolated(credentials=CloudKeyCredentials(key_id, secret))(lambda: "ok")
    assert f() == "ok"
    subprocess.run([atoll_binary(), "keys", "revoke", key_id, "--data-dir", str(server.data_dir)], check=True, capture_output=True)
    time.sleep(1.2)  # a running server trusts a verified key for at most a second
    with pytest.raises(atoll.AuthenticationError, match="invalid API key"):
        f()


def test_accounts_never_share_workers_or_runs(server, no_env_key):
    alice = CloudKeyCredentials(*server.create_key("alice"))
    bob = CloudKeyCredentials(*server.create_key("bob"))

    def ident():
        return worker_identity()

    as_alice = isolated(keep_alive=30, credentials=alice)(ident)
    as_bob = isolated(keep_alive=30, credentials=bob)(ident)
    a1, b1, a2 = as_alice(), as_bob(), as_alice()
    assert a1 == a2  # alice's warm worker is hers to reuse
    assert a1 != b1

    def list_as(creds, what):
        from atoll.v1 import atoll_pb2 as pb
        from atoll.v1 import atoll_pb2_grpc as pb_grpc

        with grpc.insecure_channel(server.address) as ch:
            stub = pb_grpc.AdminStub(ch)
            if what == "workers":
                return stub.ListWorkers(pb.ListWorkersRequest(), metadata=creds.metadata()).workers
            return stub.ListRuns(pb.ListRunsRequest(limit=100), metadata=creds.metadata()).runs

    assert {w.account for w in list_as(alice, "workers")} == {"alice"}
    assert {w.account for w in list_as(bob, "workers")} == {"bob"}
    assert wait_until(lambda: len(list_as(alice, "runs")) == 2 and len(list_as(bob, "runs")) == 1)
    alice_runs = {r.id for r in list_as(alice, "runs")}
    bob_runs = {r.id for r in list_as(bob, "runs")}
    assert not alice_runs & bob_runs

    env = {**os.environ, "ATOLL_HOST": server.address, "ATOLL_KEY_ID": bob.key_id, "ATOLL_KEY_SECRET": bob.key_secret}
    proc = subprocess.run([atoll_binary(), "logs", sorted(alice_runs)[0]], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "no run" in proc.stderr


def test_runs_and_logs_are_recorded(server):
    tag = uuid.uuid4().hex

    @isolated()
    def chatty(tag):
        print("hello", tag)
        return tag

    assert chatty(tag) == tag
    env = {**os.environ, "ATOLL_HOST": server.address}

    def runs():
        return subprocess.run([atoll_binary(), "runs", "--limit", "5"], env=env, capture_output=True, text=True, check=True).stdout

    assert wait_until(lambda: "chatty" in runs() and " ok " in runs())
    run_id = next(line.split()[0] for line in runs().splitlines() if "chatty" in line)
    logs = subprocess.run([atoll_binary(), "logs", run_id], env=env, capture_output=True, text=True, check=True).stdout
    assert logs == f"hello {tag}\n"


def test_worker_token_dies_with_its_worker(server):
    @isolated(keep_alive=0)
    def my_token():
        import os

        return os.environ["ATOLL_WORKER_TOKEN"], os.environ["ATOLL_HOST"]

    token, host = my_token()
    assert token and token not in (os.environ["ATOLL_KEY_SECRET"], os.environ["ATOLL_KEY_ID"])
    assert wait_until(lambda: not [w for w in live_workers(server) if "my_token" in w.function_name])

    from atoll.v1 import atoll_pb2 as pb
    from atoll.v1 import atoll_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.address) as ch:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.AdminStub(ch).ListWorkers(pb.ListWorkersRequest(), metadata=(("x-atoll-worker-token", token),))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_nested_call_uses_the_workers_token(server):
    @isolated(keep_alive=0)
    def inner():
        import os

        return os.environ.get("ATOLL_KEY_SECRET"), worker_identity()

    @isolated(keep_alive=0)
    def outer():
        import os

        secret_seen, inner_worker = inner()
        return secret_seen, inner_worker, worker_identity(), "ATOLL_WORKER_TOKEN" in os.environ

    secret_seen, inner_worker, outer_worker, has_token = outer()
    assert secret_seen is None  # the caller's secret never reaches a worker
    assert inner_worker != outer_worker
    assert has_token


def test_non_loopback_listen_without_tls_is_refused(tmp_path):
    proc = subprocess.run(
        [atoll_binary(), "server", "--listen", f"0.0.0.0:{free_port()}", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode != 0
    assert "refusing to listen on 0.0.0.0" in proc.stderr and "TLS" in proc.stderr


def test_keys_and_runs_survive_a_restart(tmp_path, no_env_key):
    srv = Server(tmp_path / "data")
    creds = CloudKeyCredentials(*srv.create_key())
    srv.start()
    host = CloudHost(srv.address)
    try:
        assert isolated(host=host, credentials=creds)(lambda: "before")() == "before"
    finally:
        srv.stop()
    srv2 = Server(tmp_path / "data").start()
    try:
        f = isolated(host=CloudHost(srv2.address), credentials=creds)(lambda: "after")
        assert f() == "after"
        from atoll.v1 import atoll_pb2 as pb
        from atoll.v1 import atoll_pb2_grpc as pb_grpc

        with grpc.insecure_channel(srv2.address) as ch:
            runs = pb_grpc.AdminStub(ch).ListRuns(pb.ListRunsRequest(), metadata=creds.metadata()).runs
        assert wait_until(lambda: len(runs) >= 1)
        assert any(r.outcome == "ok" for r in runs)
    finally:
        srv2.stop()


def test_secrets_are_stored_hashed(server):
    key_id, secret = server.create_key("hashed")
    raw = b"".join(p.read_bytes() for p in server.data_dir.glob("state.db*"))
    assert key_id.encode() in raw  # the store is the right one
    assert secret.encode() not in raw


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_tls(tmp_path, no_env_key, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    srv = Server(tmp_path / "data", ["--tls-cert", str(cert), "--tls-key", str(key)], tls_ca=cert)
    creds = CloudKeyCredentials(*srv.create_key())
    srv.start()
    try:
        monkeypatch.setenv("ATOLL_TLS_CA", str(cert))
        assert isolated(host=CloudHost(srv.address), credentials=creds)(lambda: "over tls")() == "over tls"
        src = tmp_path / "src"
        src.mkdir()
        (src / "f.txt").write_text("synced over tls")
        synced = sync_dir(src, "/data/tls", host=CloudHost(srv.address), credentials=creds)
        assert (synced, synced.files_sent) == ("/data/tls", 1)  # storage calls share the calls' channels
        monkeypatch.delenv("ATOLL_TLS_CA")
        with pytest.raises(atoll.ServerUnavailableError):  # plaintext to a TLS server fails, clearly
            isolated(host=CloudHost(srv.address), credentials=creds)(lambda: 1)()
    finally:
        srv.stop()


def test_zero_setup_local_server(tmp_path):
    """A fresh user with only the SDK and the binary: no ATOLL_HOST, no key,
    no server started by hand. Two processes share one local server."""
    home = tmp_path / "home"
    port = free_port()
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("ATOLL_") and k not in ("XDG_CONFIG_HOME", "XDG_DATA_HOME")
    }
    env.update(HOME=str(home), ATOLL_LOCAL_ADDRESS=f"127.0.0.1:{port}", PYTHONUNBUFFERED="1")
    if Path(atoll_binary()).resolve() != (REPO / "bin" / "atoll").resolve():
        env["ATOLL_BIN"] = atoll_binary()  # else the SDK finds the checkout's bin/atoll by itself
    script = (REPO / "examples" / "reference" / "hello_world.py").read_text() + "import os; print(os.getpid())\n"
    try:
        first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines()[0] == "Hello World"
        creds = home / ".config" / "atoll" / "credentials.json"
        assert creds.exists() and oct(creds.stat().st_mode & 0o777) == "0o600"
        pid_file = home / ".local" / "share" / "atoll" / "server" / "server.pid"
        server_pid = pid_file.read_text().split()[0]
        second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert pid_file.read_text().split()[0] == server_pid  # reused, not restarted
        status = subprocess.run([atoll_binary(), "server", "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 0 and f"pid:      {server_pid}" in status.stdout
    finally:
        subprocess.run([atoll_binary(), "server", "stop"], env=env, capture_output=True, timeout=30)
    stopped = subprocess.run([atoll_binary(), "server", "status"], env=env, capture_output=True, text=True)
    assert stopped.returncode == 3
