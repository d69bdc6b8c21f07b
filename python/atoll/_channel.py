"""The gRPC channels of the SDK: every stub (calls, storage, admin) takes
its channel from here.

One channel per (target, TLS settings), opened on first use and kept, so
that calls share its connection. A channel does not survive ``fork``: a
child process that inherited the cache drops it (the pid it was filled
in is checked) and opens channels of its own.
"""

from __future__ import annotations

import os
import threading
from typing import NamedTuple, TypeVar

import grpc
import grpc.experimental

from atoll import _credentials

S = TypeVar("S")

_MAX_MESSAGE = 2**31 - 1
_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
]
# Run calls are unary-stream: handled in the calling thread, they skip a
# thread hand-off per event.
_SINGLE_THREADED = getattr(getattr(grpc.experimental, "ChannelOptions", None), "SingleThreadedUnaryStream", None)
if _SINGLE_THREADED:
    _OPTIONS.append((_SINGLE_THREADED, 1))

# Keepalive on connections to a server: while a call is in flight, gRPC
# pings the server every KEEPALIVE_TIME_MS and gives the connection up when
# a ping goes unanswered for KEEPALIVE_TIMEOUT_MS. A server that died or
# stopped answering (a crash leaving no one to close the connection, a
# SIGSTOP, a host gone) is so detected within their sum, 15 s, and the call
# fails with ServerUnavailableError naming the server instead of hanging.
# The server allows pings every 5 s (serverapp.KeepaliveMinClientInterval).
KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000
_KEEPALIVE: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # A call may run for hours without a byte either way: keep pinging.
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_time_between_pings_ms", KEEPALIVE_TIME_MS),
    # Newer gRPC cores time an unanswered ping out with this (default 60 s)
    # rather than with the keepalive timeout alone.
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
]


class TLS(NamedTuple):
    """How channels are secured: ``ca`` is the path of a CA certificate to
    trust, ``system_roots`` says to trust the system's roots; neither means
    plain text."""

    ca: str | None
    system_roots: bool


def tls_settings() -> TLS:
    """TLS for channels: a CA certificate from ATOLL_TLS_CA (or the
    credentials file's tls_ca), or ATOLL_TLS=1 for the system's roots."""
    return TLS(
        os.environ.get("ATOLL_TLS_CA") or _credentials.load_saved().get("tls_ca"),
        os.environ.get("ATOLL_TLS") == "1",
    )


def _open(target: str, tls: TLS) -> grpc.Channel:
    if target.startswith("unix:"):
        # host=local's supervisor: a unix socket never leaves this machine
        # and takes no TLS. It keeps a process's warm workers while its
        # connection lives, so an idle channel must not drop it after gRPC's
        # 30 minutes; and a channel opened after the supervisor started must
        # not share a connection still backing off from before.
        options = [*_OPTIONS, ("grpc.client_idle_timeout_ms", 2**31 - 1), ("grpc.use_local_subchannel_pool", 1)]
        return grpc.insecure_channel(target, options=options)
    # gRPC's shared subchannel pool: a call retried after autostart may meet
    # the failed connection's backoff, which _client's retry loop outlasts.
    options = [*_OPTIONS, *_KEEPALIVE]
    if tls.ca:
        with open(tls.ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        return grpc.secure_channel(target, creds, options=options)
    if tls.system_roots:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
    return grpc.insecure_channel(target, options=options)


_Key = tuple[str, TLS]


class _Cache:
    """The open channels, and the stubs made on them, of one process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.channels: dict[_Key, grpc.Channel] = {}
        self.stubs: dict[tuple[_Key, type], object] = {}

    def check_pid(self) -> None:
        """Drops what a parent process opened; called with lock held. Forks
        that bypass os.fork (a C extension calling fork) run no at-fork
        hook: the pid tells."""
        if os.getpid() != self.pid:
            self.after_fork()

    def after_fork(self) -> None:
        """Forgets the parent's channels, in a child just forked: gRPC
        channels do not work across fork, their connections are the
        parent's."""
        # A new lock: another thread of the parent may have held this one.
        self.lock = threading.Lock()
        self.channels.clear()
        self.stubs.clear()
        self.pid = os.getpid()


_cache = _Cache()
if hasattr(os, "register_at_fork"):  # where there is fork at all
    os.register_at_fork(after_in_child=_cache.after_fork)


def stub(target: str, stub_class: type[S]) -> S:
    """A stub of stub_class (such as ``FunctionsStub``) on the channel to
    target (host:port), with TLS as ``tls_settings`` says; the channel is
    opened, and the stub made, on first use in this process.

    Example::

        functions = stub("127.0.0.1:8443", atoll_pb2_grpc.FunctionsStub)
    """
    key = (target, tls_settings())
    with _cache.lock:
        _cache.check_pid()
        made = _cache.stubs.get((key, stub_class))
        if made is None:
            ch = _cache.channels.get(key)
            if ch is None:
                ch = _cache.channels[key] = _open(*key)
            made = _cache.stubs[(key, stub_class)] = stub_class(ch)  # type: ignore[call-arg]
        return made  # type: ignore[return-value]


def forget(target: str) -> None:
    """Closes the channel to target, if open, and drops its stubs: the next
    stub opens a fresh channel."""
    key = (target, tls_settings())
    with _cache.lock:
        _cache.check_pid()
        ch = _cache.channels.pop(key, None)
        for made in [k for k in _cache.stubs if k[0] == key]:
            del _cache.stubs[made]
    if ch is not None:
        ch.close()
