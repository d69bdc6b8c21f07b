"""Workers' networks: by default each worker has a network namespace of its
own, with outbound access through a user-mode stack and no route to the
host's loopback, other workers, link-local or private addresses. Every
check here sends traffic only to loopback or picks a route without sending
anything (a UDP connect)."""

from __future__ import annotations

import os
import socket
import threading
import uuid

import pytest

import atoll
from atoll import isolated
from conftest import Server


def require_sandbox(srv: Server, creds: atoll.CloudKeyCredentials) -> None:
    """Skips unless workers run sandboxed (CI: fails instead)."""
    import grpc

    from atoll.v1 import atoll_pb2 as pb
    from atoll.v1 import atoll_pb2_grpc as pb_grpc

    with grpc.insecure_channel(srv.address) as channel:
        status = pb_grpc.AdminStub(channel).Status(pb.StatusRequest(), metadata=creds.metadata())
    if status.sandbox == "process":
        reason = f"workers are not sandboxed on this host: {status.sandbox_warning}"
        if os.environ.get("ATOLL_REQUIRE_SANDBOX") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def two_accounts(tmp_path_factory):
    """A server with the default network and two accounts."""
    srv = Server(tmp_path_factory.mktemp("network") / "data")
    a = atoll.CloudKeyCredentials(*srv.create_key("net-a"))
    b = atoll.CloudKeyCredentials(*srv.create_key("net-b"))
    srv.start()
    require_sandbox(srv, a)
    yield srv, a, b
    srv.stop()
    assert "panic" not in srv.log(), srv.log()


def connect_tcp(address: str, port: int) -> str:
    import socket

    try:
        with socket.create_connection((address, port), timeout=3):
            return "connected"
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def udp_route(address: str) -> str:
    """Whether the kernel has a route to address: a UDP connect picks one and
    sends nothing."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((address, 53))
        return "route"
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        s.close()


def test_worker_cannot_reach_the_hosts_loopback(two_accounts):
    srv, a, _ = two_accounts
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []

    def accept():
        listener.settimeout(10)
        try:
            conn, _ = listener.accept()
            accepted.append(conn)
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    port = listener.getsockname()[1]
    server_port = int(srv.address.rsplit(":", 1)[1])
    try:
        f = isolated(host=atoll._host.CloudHost(srv.address), credentials=a, keep_alive=0)
        got = f(lambda: (connect_tcp("127.0.0.1", port), connect_tcp("127.0.0.1", server_port)))()
    finally:
        listener.close()
        t.join()
    assert got[0].startswith("ConnectionRefusedError"), got
    assert got[1].startswith("ConnectionRefusedError"), got  # nor the server's own port
    assert not accepted
    assert srv.alive()


def test_no_route_to_link_local_or_private_ranges(two_accounts):
    srv, a, _ = two_accounts
    f = isolated(host=atoll._host.CloudHost(srv.address), credentials=a, keep_alive=0)
    routes = f(lambda: {ip: udp_route(ip) for ip in ("169.254.169.254", "10.0.0.1", "172.16.0.1", "192.168.0.1", "1.1.1.1")})()
    for ip in ("169.254.169.254", "10.0.0.1", "172.16.0.1", "192.168.0.1"):
        assert "Network is unreachable" in routes[ip], routes
    # Outbound access: a route to a public address exists (nothing is sent).
    assert routes["1.1.1.1"] == "route", routes


def listen_abstract(name: str) -> str:
    """Binds an abstract unix socket in this worker and keeps it open."""
    import builtins
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0" + name)
    s.listen()
    builtins._atoll_test_abstract = s
    return "listening" if connect_abstract(name) == "connected" else "cannot reach its own socket"


def connect_abstract(name: str) -> str:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + name)
        return "connected"
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        s.close()


def test_worker_cannot_reach_another_accounts_abstract_socket(two_accounts):
    srv, a, b = two_accounts
    host = atoll._host.CloudHost(srv.address)
    name = f"atoll-test-{uuid.uuid4().hex}"
    # Account A's worker binds the socket and stays warm with it.
    assert isolated(host=host, credentials=a, keep_alive=30)(listen_abstract)(name) == "listening"
    got = isolated(host=host, credentials=b, keep_alive=0)(connect_abstract)(name)
    assert got.startswith("ConnectionRefusedError"), got


def nested_double(x):
    from atoll import isolated

    return isolated(keep_alive=0)(lambda y: y * 2)(x)


def test_nested_call_from_an_isolated_worker(two_accounts):
    srv, a, _ = two_accounts
    f = isolated(host=atoll._host.CloudHost(srv.address), credentials=a, keep_alive=0)
    assert f(lambda: __import__("os").environ["ATOLL_HOST"])().startswith("unix:")
    assert f(nested_double)(21) == 42


def test_network_host_keeps_the_hosts_network(tmp_path):
    srv = Server(tmp_path / "data", ["--network", "host"])
    creds = atoll.CloudKeyCredentials(*srv.create_key())
    srv.start()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        require_sandbox(srv, creds)
        f = isolated(host=atoll._host.CloudHost(srv.address), credentials=creds, keep_alive=0)
        assert f(lambda: connect_tcp("127.0.0.1", port))() == "connected"
        assert f(nested_double)(4) == 8
        assert not f(lambda: __import__("os").environ["ATOLL_HOST"])().startswith("unix:")
    finally:
        listener.close()
        srv.stop()
    assert "panic" not in srv.log(), srv.log()
