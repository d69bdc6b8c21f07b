"""Lean local calls: Run over the local server's unix socket (atoll._lean,
internal/fastcall), against real server processes and real sockets. The
socket's attacks are performed for real, and the server must serve on."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import atoll
from atoll import CloudKeyCredentials, _channel, _lean, isolated
from conftest import Server, live_workers, wait_until


def lean_socket(server: Server) -> str:
    return str(server.data_dir / "calls.sock")


def pooled(server: Server) -> int:
    """Idle lean connections this process holds to the server's socket."""
    return sum(len(conns) for key, conns in _lean._pool.idle.items() if key[0] == lean_socket(server))


def pooled_ids(server: Server) -> set[int]:
    return {id(c) for key, conns in _lean._pool.idle.items() if key[0] == lean_socket(server) for c in conns}


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + struct.pack(">I", len(payload)) + payload


def read_frame(sock: socket.socket) -> tuple[bytes, bytes]:
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise EOFError("the server closed the connection")
            out += chunk
        return out

    header = exactly(5)
    return header[:1], exactly(struct.unpack(">I", header[1:])[0])


def hello(key_id: str, secret: str) -> bytes:
    md = {"x-atoll-key-id": key_id, "x-atoll-key-secret": secret}
    return frame(b"H", json.dumps({"version": 1, "metadata": md}).encode())


def connect(server: Server) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(15)
    sock.connect(lean_socket(server))
    return sock


def end_of(sock: socket.socket) -> tuple[int, str]:
    """Reads up to the End frame: its status code and message."""
    while True:
        kind, payload = read_frame(sock)
        if kind == b"S":
            return payload[0], payload[1:].decode()


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


@isolated(keep_alive=60)
def where(x):
    import os

    print(f"out {x}")
    print(f"err {x}", file=__import__("sys").stderr)
    return x * 2, os.getpid()


def test_warm_calls_go_over_the_socket_and_reuse_a_connection(server, capfd):
    where(0)  # over gRPC: the server names its socket
    assert _lean.socket_for(server.address, _channel.tls_settings()) == lean_socket(server)
    assert os.stat(lean_socket(server)).st_mode & 0o777 == 0o600
    first = where(1)
    before = pooled_ids(server)
    results = [first] + [where(i) for i in range(2, 4)]
    assert [r[0] for r in results] == [2, 4, 6]
    assert len({r[1] for r in results}) == 1, "a warm worker served every call"
    after = pooled_ids(server)
    assert after and after <= before, "the calls one after another took a pooled connection, opening none"
    out, err = capfd.readouterr()
    assert "out 3" in out and "err 3" in err


def test_refusals_and_exceptions_come_back_as_over_grpc(server, monkeypatch):
    """A call the server refuses, and a function that raises, raise the same
    exception over both transports; the connection serves on after them."""

    @isolated(keep_alive=60)
    def fails():
        raise KeyError("missing")

    def outcomes() -> list[str]:
        got = []
        with pytest.raises(atoll.AtollError) as refused:
            where.on(machine_type="NOPE")(1)
        got.append(f"{type(refused.value).__name__}: {refused.value}")
        with pytest.raises(KeyError) as raised:
            fails()
        got.append(repr(raised.value))
        return got

    where(0)
    assert _lean.socket_for(server.address, _channel.tls_settings()) == lean_socket(server)
    lean = outcomes()
    assert pooled(server) >= 1, "the connection went back to the pool after the refusal and the exception"
    assert where(4)[0] == 8
    monkeypatch.setenv("ATOLL_LEAN_CALLS", "0")
    assert outcomes() == lean
    assert "NOPE" in lean[0]


def test_calls_stay_on_grpc_with_lean_calls_off(server, run_script, monkeypatch):
    script = """
import os
from atoll import isolated, _channel, _lean
f = isolated(keep_alive=60)(lambda: 42)
print(f(), f(), _lean.socket_for(os.environ["ATOLL_HOST"], _channel.tls_settings()), len(_lean._pool.idle))
"""
    monkeypatch.setenv("ATOLL_LEAN_CALLS", "0")
    proc = run_script(script)
    assert proc.stdout.split() == ["42", "42", "None", "0"], proc.stderr
    monkeypatch.delenv("ATOLL_LEAN_CALLS")
    proc = run_script(script)
    assert proc.stdout.split()[:3] == ["42", "42", lean_socket(server)], proc.stderr


def test_a_socket_gone_falls_back_to_grpc(server, tmp_path):
    where(0)
    assert _lean.socket_for(server.address, _channel.tls_settings()) == lean_socket(server)
    try:
        # A socket the caller cannot open: the call goes over gRPC.
        _lean._pool.sockets[(server.address, _channel.tls_settings())] = str(tmp_path / "missing.sock")
        assert where(5)[0] == 10
        assert _lean.socket_for(server.address, _channel.tls_settings()) == lean_socket(server), "the next gRPC call named the socket again"
    finally:
        _lean._pool.sockets[(server.address, _channel.tls_settings())] = lean_socket(server)


def test_cancel_timeout_and_generators_over_the_socket(server):
    from test_timeouts import run_outcomes

    where(0)
    assert _lean.socket_for(server.address, _channel.tls_settings()) == lean_socket(server)

    @isolated(keep_alive=30)
    def lean_nap():
        import time

        time.sleep(600)

    f = lean_nap.submit()
    assert wait_until(lambda: any(w.function_name.endswith("lean_nap") and not w.idle for w in live_workers(server)), 60)
    assert f.cancel()
    assert wait_until(lambda: run_outcomes(server, "lean_nap") == ["cancelled"], timeout=10)

    @isolated(timeout=1, keep_alive=30)
    def lean_stuck():
        import time

        time.sleep(600)

    with pytest.raises(atoll.TimeoutError, match="timeout of 1s"):
        lean_stuck()

    @isolated(keep_alive=30)
    def lean_count():
        import itertools
        import time

        for i in itertools.count():
            yield i
            time.sleep(0.01)

    values = lean_count()
    assert [next(values) for _ in range(3)] == [0, 1, 2]
    values.close()
    assert wait_until(lambda: run_outcomes(server, "lean_count") == ["cancelled"], timeout=10)
    # The connections of cut calls were closed, not pooled: the next call
    # takes a clean one.
    assert where(7)[0] == 14


def test_accounts_stay_apart_over_the_socket(server):
    """Another account's key, on its own lean connection, reaches only its
    own warm workers: account B never gets account A's worker."""
    a = CloudKeyCredentials(*server.create_key("lean-a"))
    b = CloudKeyCredentials(*server.create_key("lean-b"))

    def ident():
        import builtins
        import uuid

        if not hasattr(builtins, "_lean_id"):
            builtins._lean_id = uuid.uuid4().hex
        return builtins._lean_id

    fa = isolated(keep_alive=60, credentials=a)(ident)
    fb = isolated(keep_alive=60, credentials=b)(ident)
    where(0)
    assert fa() == fa() == fa()
    assert fb() == fb()
    assert fa() != fb()
    keys = {key[1] for key in _lean._pool.idle if key[0] == lean_socket(server)}
    assert a.metadata() in keys and b.metadata() in keys, "each account has connections of its own"


def test_attacks_on_the_socket_fail_and_the_server_serves_on(server):
    key_id, secret = os.environ["ATOLL_KEY_ID"], os.environ["ATOLL_KEY_SECRET"]

    # A wrong key is refused at the hello, and the connection closed.
    with connect(server) as sock:
        sock.sendall(hello(key_id, "not-the-secret"))
        code, message = end_of(sock)
        assert code == 16 and "invalid API key" in message  # UNAUTHENTICATED
        assert closed(sock)

    # Garbage before authenticating (an HTTP/2 preface).
    with connect(server) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        code, message = end_of(sock)
        assert code == 3 and "hello" in message  # INVALID_ARGUMENT
        assert closed(sock)

    # A call without a hello.
    with connect(server) as sock:
        sock.sendall(frame(b"R", b"\x0a\x01f"))
        assert end_of(sock)[0] == 3
        assert closed(sock)

    # A length of 2 GiB declared before authenticating: refused from the
    # header, nothing allocated.
    with connect(server) as sock:
        sock.sendall(b"H" + struct.pack(">I", 2**31))
        code, message = end_of(sock)
        assert code == 8 and "too large" in message  # RESOURCE_EXHAUSTED
        assert closed(sock)

    # Authenticated, a Run frame longer than --max-message-bytes.
    with connect(server) as sock:
        sock.sendall(hello(key_id, secret))
        assert read_frame(sock)[0] == b"K"
        sock.sendall(b"R" + struct.pack(">I", 2**32 - 1))
        code, message = end_of(sock)
        assert code == 8 and "max-message-bytes" in message
        assert closed(sock)

    # A request that does not decode is refused, and the connection serves on.
    with connect(server) as sock:
        sock.sendall(hello(key_id, secret))
        assert read_frame(sock)[0] == b"K"
        sock.sendall(frame(b"R", b"\xff\xff\xff"))
        code, message = end_of(sock)
        assert code == 3 and "not a valid" in message
        sock.sendall(frame(b"P"))
        assert read_frame(sock)[0] == b"O"

    # A peer that connects and says nothing is dropped at the handshake
    # timeout (10 s by default); a revoked key is the gRPC tests' concern.
    assert where(21)[0] == 42, "the server serves on after the attacks"
    assert "panic" not in server.log()


def test_a_flood_of_silent_connections_costs_the_flooder(tmp_path):
    srv = Server(tmp_path / "data", extra_args=["--max-unauthenticated-conns", "4"])
    srv.create_key()
    srv.start()
    try:
        socks = [connect(srv) for _ in range(8)]
        # The oldest are closed for the newer ones: at most 4 stay.
        assert wait_until(lambda: sum(1 for s in socks[:4] if _is_closed_now(s)) == 4, timeout=10)
        for s in socks:
            s.close()
        assert srv.alive()
    finally:
        srv.stop()


def _is_closed_now(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


CHATTY = """
import sys
from atoll import isolated

@isolated(keep_alive=60)
def chatty():
    import time
    for i in range(600):
        print(f"line {i}", flush=True)
        time.sleep(0.1)

@isolated(keep_alive=60)
def warm():
    return 1

warm()
from atoll import _channel, _lean
import os
assert _lean.socket_for(os.environ["ATOLL_HOST"], _channel.tls_settings()), "the socket was named"
print("lean", flush=True)
chatty()
"""


def _caller(srv: Server, tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "chatty.py"
    script.write_text(CHATTY)
    env = {**os.environ, "ATOLL_HOST": srv.address, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_a_server_gone_mid_call_is_named(tmp_path, how):
    """kill -9 closes the socket at once; SIGSTOP leaves it open and
    silent, and the caller's pings (10 s, then 5 s) give it up. A server
    started again on the data directory removes what the killed one's
    worker left on the host (its cgroups)."""
    cgroups_before = _atoll_cgroups()
    srv = Server(tmp_path / "data")
    key_id, secret = srv.create_key()
    srv.start()
    saved = {k: os.environ.get(k) for k in ("ATOLL_KEY_ID", "ATOLL_KEY_SECRET")}
    os.environ.update(ATOLL_KEY_ID=key_id, ATOLL_KEY_SECRET=secret)
    try:
        caller = _caller(srv, tmp_path)
        while True:
            line = caller.stdout.readline()
            assert line, caller.stderr.read()
            if line.startswith("line "):
                break
        started = time.monotonic()
        if how == "killed":
            srv.proc.kill()
        else:
            srv.proc.send_signal(signal.SIGSTOP)
        try:
            _, err = caller.communicate(timeout=60)
            waited = time.monotonic() - started
        finally:
            if how == "stopped":
                srv.proc.send_signal(signal.SIGCONT)
        assert "ServerUnavailableError" in err and srv.address in err and "went away during the call" in err, err
        assert waited < 45, waited
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        srv.stop()
    if how == "killed":
        if "sandbox=runc" in srv.log():
            assert _atoll_cgroups() - cgroups_before, "the killed server's worker left no cgroup: the check below proves nothing"
        srv.start()
        srv.stop()
    assert _atoll_cgroups() - cgroups_before == set()


def _atoll_cgroups() -> set[str]:
    """The cgroup directories atoll made on this host (under any
    hierarchy's atoll parent), as paths."""
    found = set()
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        depth = root.count("/") - 3
        if depth >= 3:
            dirs[:] = []
        if "/atoll" in root:
            found.update(os.path.join(root, d) for d in dirs)
    return found


def test_a_large_value_is_unpickled_as_it_arrives_and_a_failure_keeps_the_connection(server):
    @isolated(keep_alive=30)
    def big(n, refuse):
        import os

        class Refuses:
            # Pickles in the worker; unpickling calls int("not a number").
            def __reduce__(self):
                return (int, ("not a number",))

        return [Refuses() if refuse else None, os.urandom(n), b"tail"]

    mb = 1_000_000
    assert big(10, False)[2] == b"tail"  # over gRPC: the server names its socket
    value = big(8 * mb, False)
    assert len(value[1]) == 8 * mb and value[2] == b"tail"
    before = pooled_ids(server)
    # The failure comes first in the pickle: 8 MB of the frame are still
    # unread when it is raised, and are read past, not taken as frames.
    with pytest.raises(atoll.SerializationError, match="the return value of .*big could not be unpickled here"):
        big(8 * mb, True)
    assert pooled_ids(server) == before, "the connection was clean after the failed value and went back to the pool"
    value = big(3 * mb, False)
    assert len(value[1]) == 3 * mb and value[2] == b"tail"
    assert pooled_ids(server) == before


def test_a_frame_stream_reads_its_frame_and_nothing_after_it():
    import pickle
    import threading

    class Conn:
        def __init__(self, sock):
            self.sock, self.buf = sock, bytearray()

    value = [os.urandom(3_000_000), "text", list(range(50_000)), b"x" * 70_000]
    payload = pickle.dumps(value, protocol=5)
    after = frame(b"S", b"\0")  # the next frame, in the same write
    a, b = socket.socketpair()
    with a, b:
        sender = threading.Thread(target=a.sendall, args=(payload + after,))
        sender.start()
        conn = Conn(b)
        stream = _lean._FrameStream(conn, len(payload))
        assert stream.peek(4) == payload[:4] and stream.left == len(payload), "peek consumes nothing"
        # The large bytes is read into the object it becomes (readinto),
        # the small opcodes through peek and read.
        assert pickle.load(stream) == value
        sender.join()
        assert stream.left == 0 and stream.read(10) == b"" and stream.peek(10) == b""
        # What a receive brought past the frame is the next frame's, and
        # stays the connection's.
        while len(conn.buf) < len(after):
            conn.buf += b.recv(64)
        assert bytes(conn.buf) == after

        a.sendall(b"one\ntwo" + after)
        conn = Conn(b)
        stream = _lean._FrameStream(conn, len(b"one\ntwo"))
        assert stream.readline() == b"one\n" and stream.readline() == b"two" and stream.readline() == b""
        stream.drain()
        while len(conn.buf) < len(after):
            conn.buf += b.recv(64)
        assert bytes(conn.buf) == after


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_large_payloads_travel_in_sealed_memory_that_the_server_never_holds(tmp_path, monkeypatch):
    """Arguments of 1 MiB and more go in a sealed memfd and a large value
    comes back in one: the server passes the pages on, so its peak memory
    does not grow by the payload, and the runner splices a large bytes
    value into its pipe rather than copying it."""
    srv = Server(tmp_path / "data")
    key_id, secret = srv.create_key()
    srv.start()
    monkeypatch.setenv("ATOLL_HOST", srv.address)
    monkeypatch.setenv("ATOLL_KEY_ID", key_id)
    monkeypatch.setenv("ATOLL_KEY_SECRET", secret)
    sent, received = [], []
    real_send, real_value = _lean._Conn.send_shared, _lean.Call._shared_value
    monkeypatch.setattr(_lean._Conn, "send_shared", lambda self, *a: (sent.append(1), real_send(self, *a))[1])
    monkeypatch.setattr(_lean.Call, "_shared_value", lambda self: (received.append(1), real_value(self))[1])
    try:
        @isolated(keep_alive=30)
        def echo(data):
            import __main__

            # The agent's bootstrap holds the runner module as "runner".
            splicer = getattr(getattr(__main__, "runner", None), "_splicer", None)
            return data, splicer.spliced if splicer is not None else -1

        assert echo(b"x")[0] == b"x"  # over gRPC: the server names its socket
        payload = os.urandom(64 * 1_000_000)
        before = _peak_rss_mib(srv.proc.pid)
        spliced = []
        for _ in range(3):
            back, count = echo(payload)
            assert back == payload
            spliced.append(count)
        del back
        grown = _peak_rss_mib(srv.proc.pid) - before
        assert len(sent) == 3 and len(received) == 3, (sent, received)
        assert grown < 24, f"the server's peak memory grew by {grown:.0f} MiB moving 64 MB values"
        # Each call reports the values spliced before it.
        assert spliced[1:] == [spliced[0] + 1, spliced[0] + 2], spliced
        assert echo(b"small")[0] == b"small" and len(sent) == 3, "small arguments stay inline"
    finally:
        srv.stop()
