"""The API edge's limits, attacked for real against atoll server processes:
unauthenticated garbage and connection floods, out-of-bound and malformed
requests, worker tokens outside their scope, one account's backlog against
another's call, and sync_dir's channel and credentials (docs/limits.md)."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import struct
import subprocess
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest

import atoll
from atoll import CloudKeyCredentials, isolated, sync_dir
from atoll._credentials import save as save_credentials
from atoll._host import CloudHost
from atoll.v1 import atoll_pb2 as pb
from atoll.v1 import atoll_pb2_grpc as pb_grpc
from conftest import Server, wait_until

MiB = 1 << 20
_BIG = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    """A server of this module's own, so that its memory is only what these
    tests make it hold; yields (server, key credentials)."""
    srv = Server(tmp_path_factory.mktemp("edge") / "data")
    creds = CloudKeyCredentials(*srv.create_key())
    srv.start()
    yield srv, creds
    srv.stop()
    assert "panic" not in srv.log(), srv.log()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def status_with_key(srv: Server, creds: CloudKeyCredentials) -> pb.StatusResponse:
    with grpc.insecure_channel(srv.address) as ch:
        return pb_grpc.AdminStub(ch).Status(pb.StatusRequest(), metadata=creds.metadata(), timeout=30)


def run_request(fn, **overrides) -> pb.RunRequest:
    req = isolated(keep_alive=0)(fn)._call((), {}).request()
    for name, value in overrides.items():
        setattr(req, name, value)
    return req


def run_raw(srv: Server, creds: CloudKeyCredentials, request: bytes | pb.RunRequest) -> list[pb.RunEvent]:
    """Sends one Run call, request as a message or as raw bytes."""
    with grpc.insecure_channel(srv.address, options=_BIG) as ch:
        call = ch.unary_stream(
            "/atoll.v1.Functions/Run",
            request_serializer=None if isinstance(request, bytes) else pb.RunRequest.SerializeToString,
            response_deserializer=pb.RunEvent.FromString,
        )
        return list(call(request, metadata=creds.metadata(), timeout=60))


# --- unauthenticated peers ---------------------------------------------------


def _hpack_literal(name: str, value: str) -> bytes:
    """One header as an HPACK literal without indexing, no Huffman."""

    def string(s: str) -> bytes:
        b = s.encode()
        if len(b) < 127:
            return bytes([len(b)]) + b
        n, out = len(b) - 127, bytearray([127])
        while n >= 128:
            out.append(n % 128 + 128)
            n //= 128
        return bytes([*out, n]) + b

    return b"\x00" + string(name) + string(value)


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def flood_raw_http2(address: str, path: str, total: int) -> int:
    """Opens one HTTP/2 connection, starts a gRPC call of path with no
    credentials whose message claims total bytes, and sends them, ignoring
    flow control as an attacker would. Returns how many bytes went out
    before the server cut the connection."""
    host, port = address.rsplit(":", 1)
    headers = b"".join(_hpack_literal(k, v) for k, v in [
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", address),
        ("content-type", "application/grpc"), ("te", "trailers"),
    ])
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"") + _frame(1, 4, 1, headers))
        chunk = _frame(0, 0, 1, bytes(16384))
        first = _frame(0, 0, 1, b"\x00" + struct.pack(">I", total - 5) + bytes(16384 - 5))
        try:
            s.sendall(first)
            sent = len(first)
            while sent < total:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:  # reset or broken pipe: the server cut us off
            return sent
    return sent


def test_unauthenticated_garbage_is_not_held(edge):
    srv, creds = edge
    status_with_key(srv, creds)
    before = rss_bytes(srv.proc.pid)

    # Two concurrent 200 MB requests with no key, over a gRPC channel...
    def garbage(n: int) -> grpc.StatusCode:
        with grpc.insecure_channel(srv.address, options=_BIG) as ch:
            try:
                ch.unary_unary("/atoll.v1.Admin/Status")(b"\x0a" * n, timeout=120)
            except grpc.RpcError as err:
                return err.code()
        return grpc.StatusCode.OK

    with futures.ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(garbage, [200 * MiB, 200 * MiB]))
    assert all(c in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE) for c in codes), codes

    # ...and 400 MB as one raw HTTP/2 request to a method that needs no key,
    # whose message gRPC would otherwise read whole.
    sent = flood_raw_http2(srv.address, "/grpc.health.v1.Health/Check", 400 * MiB)
    assert sent < 400 * MiB, "the server read 400 MB from a peer that never authenticated"

    after = rss_bytes(srv.proc.pid)
    assert after - before < 50 * MiB, f"resident memory grew from {before >> 20} MiB to {after >> 20} MiB"
    assert srv.alive()
    assert status_with_key(srv, creds).account == "default"
    assert "too much before authenticating" in srv.log()


def test_idle_connections_do_not_lock_out_an_authenticated_call(edge):
    srv, creds = edge
    want = 10_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = want + 1000
    if soft < need:
        raised_hard = hard if hard == resource.RLIM_INFINITY or hard >= need else need
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, raised_hard))  # a higher hard limit needs root, as CI is
        except (ValueError, OSError) as err:
            pytest.fail(f"this test needs {need} file descriptors (the hard limit is {hard}): {err}")
    host, port = srv.address.rsplit(":", 1)
    idle: list[socket.socket] = []
    try:
        for _ in range(want):
            idle.append(socket.create_connection((host, int(port)), timeout=30))
        server_fds = len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
        assert server_fds < 2000, f"the server holds {server_fds} descriptors for {want} idle connections"

        assert status_with_key(srv, creds).account == "default"
        fn = isolated(keep_alive=0, host=CloudHost(srv.address), credentials=creds)(lambda: "still served")
        assert fn() == "still served"
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- request fields ------------------------------------------------------------


def _answer():
    return 42


def test_a_huge_function_name_is_refused_naming_the_field(edge):
    srv, creds = edge
    with pytest.raises(grpc.RpcError) as info:
        run_raw(srv, creds, run_request(_answer, function_name="f" * (5 * MiB)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "function_name" in info.value.details()
    assert len(info.value.details()) < 1000  # the value is not echoed back
    # Nothing was stored: the account's history still lists.
    with grpc.insecure_channel(srv.address) as ch:
        runs = pb_grpc.AdminStub(ch).ListRuns(pb.ListRunsRequest(limit=1000), metadata=creds.metadata()).runs
    assert all(len(r.function_name) < 2000 for r in runs)


@pytest.mark.parametrize("keep_alive", [float("inf"), 1e300, float("nan"), 86400.5])
def test_keep_alive_out_of_bounds_is_refused(edge, keep_alive):
    srv, creds = edge
    with pytest.raises(grpc.RpcError) as info:
        run_raw(srv, creds, run_request(_answer, keep_alive_seconds=keep_alive))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "keep_alive_seconds" in info.value.details()


def test_out_of_bound_requirements_are_refused(edge):
    srv, creds = edge
    req = run_request(_answer)
    req.environment.requirements.extend(["six"] * 501)
    with pytest.raises(grpc.RpcError) as info:
        run_raw(srv, creds, req)
    assert (info.value.code(), "environment.requirements" in info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, True)


def test_the_sdk_raises_a_value_error_for_a_refused_field(edge):
    srv, creds = edge
    fn = isolated(keep_alive=1e300, host=CloudHost(srv.address), credentials=creds)(_answer)
    with pytest.raises(atoll.InvalidRequestError, match="keep_alive") as info:
        fn()
    assert isinstance(info.value, ValueError) and isinstance(info.value, atoll.AtollError)


def test_a_truncated_protobuf_is_invalid_argument(edge):
    srv, creds = edge
    whole = run_request(_answer).SerializeToString()
    with pytest.raises(grpc.RpcError) as info:
        run_raw(srv, creds, whole[:-3])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    # A unary request too: a field claiming more bytes than follow.
    with grpc.insecure_channel(srv.address) as ch:
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary("/atoll.v1.Admin/GetRunLogs")(b"\x0a\x7fshort", metadata=creds.metadata(), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert run_raw(srv, creds, whole)[-1].result.value  # and the whole one runs


# --- worker tokens -------------------------------------------------------------


def test_a_worker_token_only_runs_functions(edge):
    srv, creds = edge

    @isolated(keep_alive=60, host=CloudHost(srv.address), credentials=creds)
    def my_token():
        import os

        return os.environ["ATOLL_WORKER_TOKEN"]

    token = my_token()  # its worker stays warm: the token is live
    worker_md = (("x-atoll-worker-token", token),)
    with grpc.insecure_channel(srv.address) as ch:
        admin = pb_grpc.AdminStub(ch)
        for name, call in [
            ("ListRuns", lambda: admin.ListRuns(pb.ListRunsRequest(), metadata=worker_md)),
            ("GetRunLogs", lambda: admin.GetRunLogs(pb.GetRunLogsRequest(run_id="r-x"), metadata=worker_md)),
            ("ListWorkers", lambda: admin.ListWorkers(pb.ListWorkersRequest(), metadata=worker_md)),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
            assert "worker token" in info.value.details()
        # The key still reads the history the token may not.
        assert admin.ListRuns(pb.ListRunsRequest(), metadata=creds.metadata()).runs

    with grpc.insecure_channel(srv.address) as ch:
        call = ch.unary_stream("/atoll.v1.Functions/Run", request_serializer=pb.RunRequest.SerializeToString,
                               response_deserializer=pb.RunEvent.FromString)
        events = list(call(run_request(_answer), metadata=worker_md, timeout=60))
    assert events[-1].HasField("result")  # running functions is what it is for


# --- fairness ----------------------------------------------------------------


def test_one_accounts_backlog_does_not_starve_another(tmp_path):
    config = tmp_path / "atoll.yaml"
    config.write_text("capacity:\n  cpus: 0.5\n  memory: 2GiB\n")  # two XS workers at a time
    srv = Server(tmp_path / "data", ["--config", str(config), "--queue-timeout", "10m"])
    a = CloudKeyCredentials(*srv.create_key("noisy"))
    b = CloudKeyCredentials(*srv.create_key("quiet"))
    srv.start()

    def slow():
        import time

        time.sleep(0.5)
        return "a"

    def quick():
        return "b"

    ch = grpc.insecure_channel(srv.address, options=_BIG)
    try:
        run = ch.unary_stream("/atoll.v1.Functions/Run", request_serializer=pb.RunRequest.SerializeToString,
                              response_deserializer=pb.RunEvent.FromString)
        backlog = [run(run_request(slow), metadata=a.metadata()) for _ in range(1000)]
        assert wait_until(lambda: status_with_key(srv, a).waiting >= 900, timeout=120), status_with_key(srv, a)

        start = time.monotonic()
        fn = isolated(keep_alive=0, host=CloudHost(srv.address), credentials=b)(quick)
        assert fn() == "b"
        took = time.monotonic() - start
        still_waiting = status_with_key(srv, a).waiting
        # Served ahead of the backlog, not after it: most of it still waits.
        assert still_waiting >= 800, (took, still_waiting)
        assert took < 60, took
        for call in backlog:
            call.cancel()
    finally:
        ch.close()
        srv.stop()
    assert "panic" not in srv.log()


def test_an_accounts_cap_holds_its_calls_not_others(tmp_path):
    config = tmp_path / "atoll.yaml"
    config.write_text("accounts:\n  max_workers: 1\n  overrides:\n    roomy: {max_workers: 0}\n")
    srv = Server(tmp_path / "data", ["--config", str(config)])
    capped = CloudKeyCredentials(*srv.create_key("capped"))
    roomy = CloudKeyCredentials(*srv.create_key("roomy"))
    srv.start()

    def hold():
        import time

        print("holding", flush=True)
        time.sleep(600)

    ch = grpc.insecure_channel(srv.address, options=_BIG)
    try:
        run = ch.unary_stream("/atoll.v1.Functions/Run", request_serializer=pb.RunRequest.SerializeToString,
                              response_deserializer=pb.RunEvent.FromString)
        first = run(run_request(hold), metadata=capped.metadata(), timeout=120)
        assert any(b"holding" in e.output.data for e in first), "the first call never ran"
        second = run(run_request(_answer), metadata=capped.metadata(), timeout=300)
        # Queued by the cap, though the host has room.
        phases = []
        for e in second:
            assert e.WhichOneof("event") in ("status", "output"), e
            phases.append(e.status.phase)
            if e.status.phase == pb.PHASE_QUEUED:
                break
        assert status_with_key(srv, capped).waiting == 1
        # Another account is not held by that cap.
        assert isolated(keep_alive=0, host=CloudHost(srv.address), credentials=roomy)(lambda: "free")() == "free"
        assert status_with_key(srv, capped).waiting == 1
        first.cancel()  # its worker goes, and the account's place with it
        events = list(second)
        assert events[-1].HasField("result"), events[-1]
    finally:
        ch.close()
        srv.stop()
    assert "panic" not in srv.log()


# --- sync_dir ----------------------------------------------------------------


class _RecordingServer:
    """A gRPC server over TLS that refuses every call and records the
    metadata it was sent."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.metadata: list[tuple[str, str]] = []
        outer = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                outer.metadata.extend(details.invocation_metadata)

                def refuse(request, context):
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "recording server")

                if details.method.endswith("/Upload"):
                    return grpc.stream_unary_rpc_method_handler(refuse)
                return grpc.unary_unary_rpc_method_handler(refuse)

        self.server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[Handler()])
        creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
        self.port = self.server.add_secure_port("localhost:0", creds)
        self.address = f"localhost:{self.port}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_sync_dir_over_tls_sends_a_saved_key_only_to_its_server(tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    srv = Server(tmp_path / "data", ["--tls-cert", str(cert), "--tls-key", str(key)], tls_ca=cert)
    key_id, secret = srv.create_key()
    srv.start()
    other = _RecordingServer(cert, key)
    try:
        for var in ("ATOLL_KEY_ID", "ATOLL_KEY_SECRET", "ATOLL_WORKER_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("ATOLL_TLS_CA", str(cert))
        save_credentials(srv.address, key_id, secret)
        src = tmp_path / "src"
        src.mkdir()
        (src / "f.txt").write_text("over tls")

        # ATOLL_HOST names another server: the key saved for srv stays home.
        monkeypatch.setenv("ATOLL_HOST", other.address)
        with pytest.raises(atoll.AuthenticationError):
            sync_dir(src, "/data/tls")
        assert other.metadata, "the sync never reached the other server"
        sent = " ".join(f"{k}={v}" for k, v in other.metadata)
        assert key_id not in sent and secret not in sent

        # The server it was saved for gets it, over TLS.
        monkeypatch.setenv("ATOLL_HOST", srv.address)
        synced = sync_dir(src, "/data/tls")
        assert (synced, synced.files_sent) == ("/data/tls", 1)
    finally:
        other.stop()
        srv.stop()


def test_sync_dir_errors_are_atoll_errors(tmp_path, edge):
    srv, creds = edge
    (tmp_path / "f").write_text("x")
    for bad in ["relative/dir", "/etc/passwd", "/data/../etc"]:
        with pytest.raises(atoll.InvalidRequestError) as info:
            sync_dir(tmp_path, bad, host=CloudHost(srv.address), credentials=creds)
        assert isinstance(info.value, ValueError)
    with pytest.raises(atoll.InvalidRequestError, match="not a directory"):
        sync_dir(tmp_path / "f", "/data/x", host=CloudHost(srv.address), credentials=creds)
    with pytest.raises(atoll.InvalidRequestError):
        sync_dir(tmp_path, "/data/x", host=atoll.local)
