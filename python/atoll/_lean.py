"""Lean local calls: Run over the local server's unix socket instead of gRPC.

grpcio's Python stack costs a caller about 0.4 ms per call; a call to a
server on this machine needs a write and a read. The server names its socket
in a header of the first gRPC Run from a loopback caller; later calls of
this process go over it, on a small pool of authenticated connections (one
call at a time on each). Anything else (a remote server, an old server
without the socket, a socket this process cannot open) stays on gRPC, and so
does everything but Run.

Frames (internal/fastcall): a type byte, a big-endian uint32 length, the
payload. Hello (JSON: version and credentials) is answered by Ready or End;
Run (a RunRequest) by Event frames (RunEvent) and one End (a status code
byte and its message). Cancel stops the call in flight; Ping is answered
by Pong, which tells a stopped server from a long call.

Large payloads travel in sealed memfds where both ends can (the hello's
and the Ready's ``shared_memory``): arguments of _SHARE_FROM bytes or more
go as RunShared (the request without them, its first byte carrying the
memfd's descriptor), and the server answers a large value with a Value
frame carrying a memfd in place of the result's Event. The server passes
both on without reading them.

Errors are raised as ``LeanError``, a ``grpc.RpcError`` with the gRPC
status code the server gave, so that the client maps them as it maps
gRPC's.
"""

from __future__ import annotations

import array
import io
import json
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from atoll._call import RESULT_TAG, VALUE_TAG, YIELDED_TAG, Loaded, ValueEvent, read_event
from atoll.v1 import atoll_pb2 as pb

# The response header naming the server's lean call socket.
HEADER = "x-atoll-lean-socket"
# ATOLL_LEAN_CALLS=0 keeps every call on gRPC.
_ENV = "ATOLL_LEAN_CALLS"

_VERSION = 1
_HELLO, _RUN, _RUN_SHARED, _CANCEL, _PING = b"H", b"R", b"F", b"C", b"P"
_READY, _EVENT, _VALUE_SHARED, _END, _PONG = ord("K"), ord("E"), ord("V"), ord("S"), ord("O")

try:
    import fcntl

    _SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    # Sealed memfds are Linux's.
    _SHARED = sys.platform.startswith("linux") and hasattr(os, "memfd_create")
except (ImportError, AttributeError):
    _SHARED = False
# Arguments this large go in a sealed memfd where the server takes one: the
# server then passes them on to the worker without reading them.
_SHARE_FROM = 1 << 20

# As gRPC's keepalive on the caller's channels (_channel): a call that
# hears nothing for KEEPALIVE_TIME pings, and gives the server up when
# KEEPALIVE_TIMEOUT passes without an answer.
KEEPALIVE_TIME = 10.0
KEEPALIVE_TIMEOUT = 5.0
# How long connecting and the hello may take.
_HANDSHAKE_TIMEOUT = 10.0
# Idle connections kept per socket and credentials, and for how long: the
# server closes connections idle for 10 minutes.
_MAX_IDLE = 32
_IDLE_FOR = 300.0
# Beyond the most recently used one, idle connections (left by a burst of
# threads) are closed after this long, so that the server does not hold a
# descriptor per thread that once called.
_SURPLUS_IDLE_FOR = 2.0
_READ_CHUNK = 256 << 10
# An event frame this large that carries a call's value (its result, or one
# a generator yielded) is unpickled as it arrives (_FrameStream), not read
# whole first: a large bytes is received straight into the object it
# becomes, with no buffer of the whole frame beside it.
_STREAM_FROM = 1 << 20
# The most pieces one sendmsg takes (Linux's UIO_MAXIOV).
_IOV_MAX = 1024

_CODES = {c.value[0]: c for c in grpc.StatusCode}


class LeanError(grpc.RpcError):
    """A lean call's failure, with the gRPC status code that names it."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Unreachable(Exception):
    """The socket could not be opened or did not answer the hello: nothing
    of the call was sent, and gRPC may still serve it."""


def _loopback(target: str) -> bool:
    host = target.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


class _Conn:
    """One authenticated connection to the socket."""

    def __init__(self, path: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.buf = bytearray()
        # Whether payloads go in sealed memfds (both ends said so), and the
        # descriptors received and not yet taken by their Value frame.
        self.shared = False
        self.fds: list[int] = []
        # A large frame being read: [kind, buffer, bytes filled].
        self.partial: list | None = None
        self.wlock = threading.Lock()
        self.used = time.monotonic()
        try:
            self.sock.settimeout(_HANDSHAKE_TIMEOUT)
            self.sock.connect(path)
            hello = json.dumps({"version": _VERSION, "metadata": dict(metadata), "shared_memory": _SHARED}).encode()
            self.send(_HELLO, hello)
            kind, payload = self.read_frame()
        except OSError as exc:
            self.sock.close()
            raise Unreachable(f"{path}: {exc}") from None
        except BaseException:
            self.sock.close()
            raise
        if kind == _END:
            self.sock.close()
            raise _end_error(payload)
        if kind != _READY:
            self.sock.close()
            raise Unreachable(f"{path}: the server answered the hello with a frame of type {kind!r}")
        try:
            self.shared = _SHARED and bool(json.loads(payload or b"{}").get("shared_memory"))
        except (ValueError, AttributeError):
            self.shared = False
        self.sock.settimeout(KEEPALIVE_TIME)

    def send(self, kind: bytes, *pieces: bytes) -> None:
        """Sends a frame whose payload is the concatenation of pieces; a
        large piece is written from its own memory (sendmsg), not copied."""
        size = sum(map(len, pieces))
        header = kind + size.to_bytes(4, "big")
        with self.wlock:
            if size < 65536:
                self.sock.sendall(b"".join((header, *pieces)))
                return
            _write_all(self.sock.sendmsg, [header, *pieces])

    def send_shared(self, head: bytes, pieces: tuple[bytes, ...]) -> None:
        """Sends a RunShared frame: the request head, and the arguments'
        pieces written into a sealed memfd whose descriptor goes with the
        frame's first byte."""
        fd = os.memfd_create("atoll-arguments", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            _write_all(lambda views: os.writev(fd, views), pieces)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            frame = memoryview(_RUN_SHARED + len(head).to_bytes(4, "big") + head)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            with self.wlock:
                sent = self.sock.sendmsg([frame], rights)
                if sent < len(frame):
                    self.sock.sendall(frame[sent:])
        finally:
            os.close(fd)

    def _recv(self) -> bytes:
        """One receive into the connection; a descriptor that comes with
        the bytes is kept for its Value frame."""
        if not self.shared:
            return self.sock.recv(_READ_CHUNK)
        data, fds, _, _ = socket.recv_fds(self.sock, _READ_CHUNK, 1, socket.MSG_CMSG_CLOEXEC)
        self.fds.extend(fds)
        return data

    def take_fd(self) -> int:
        """The descriptor a Value frame brought."""
        if not self.fds:
            raise LeanError(grpc.StatusCode.INTERNAL, "the server sent a value without its shared memory")
        return self.fds.pop(0)

    def read_frame(self, stream_values: bool = False) -> tuple[int, bytes | bytearray | _FrameStream]:
        """The next frame; EOFError when the server closed the connection.
        A socket timeout leaves what was read buffered for the next try.
        With stream_values, a large event frame comes as a _FrameStream of
        its payload, to be read to its end before the next frame."""
        buf = self.buf
        while True:
            if self.partial is not None:
                kind, out, filled = self.partial
                view = memoryview(out)
                while filled < len(out):
                    n = self.sock.recv_into(view[filled:])
                    if n == 0:
                        raise EOFError
                    filled += n
                    self.partial[2] = filled
                self.partial = None
                return kind, out
            if len(buf) >= 5:
                kind = buf[0]
                n = int.from_bytes(buf[1:5], "big")
                if stream_values and kind == _EVENT and n >= _STREAM_FROM:
                    del buf[:5]
                    return kind, _FrameStream(self, n)
                if len(buf) >= 5 + n:
                    payload = bytes(buf[5:5 + n])
                    del buf[:5 + n]
                    return kind, payload
                if n > _READ_CHUNK:
                    out = bytearray(n)
                    have = len(buf) - 5
                    out[:have] = buf[5:]
                    del buf[:]
                    self.partial = [kind, out, have]
                    continue
            chunk = self._recv()
            if not chunk:
                raise EOFError
            buf += chunk

    def alive(self) -> bool:
        """Whether the server kept the idle connection open."""
        # Nothing to read is the healthy case; a readable idle connection
        # was closed (or holds what no call asked for).
        # poll, not select: a process may hold descriptors past 1024.
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        try:
            return not poller.poll(0)
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def _write_all(write: Callable[[list[memoryview]], int], pieces: Any) -> None:
    """Writes pieces, in order, from their own memory: write (sendmsg,
    writev) takes up to _IOV_MAX views and says how much it wrote."""
    views = [memoryview(p) for p in pieces if len(p)]
    while views:
        written = write(views[:_IOV_MAX])
        while written:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0] = views[0][written:]
                written = 0


class _HugePages:
    """Asks the kernel to back a large buffer that is about to be filled
    (a bytes being unpickled from the connection or a shared value's memfd)
    with transparent huge pages: one page fault per 2 MiB rather than 512,
    which takes a third less time for a 100 MB read into fresh memory.
    Linux offers them on request by default (transparent_hugepage=madvise);
    where madvise(2) is missing or refused, it is off for good and nothing
    changes but the speed. (The caller's allocator cannot be told from here;
    the runner's is, by the agent: GLIBC_TUNABLES=glibc.malloc.hugetlb=1.)"""

    SIZE = 2 << 20
    # Buffers smaller than this are left as the allocator made them.
    FROM = 4 << 20
    _MADV_HUGEPAGE = 14

    def __init__(self) -> None:
        self.off = not sys.platform.startswith("linux")
        self._ctypes: Any = None
        self._madvise: Any = None

    def advise(self, buffer: Any) -> None:
        """buffer: a writable buffer (a memoryview of the object being
        filled). Only its whole huge pages are advised."""
        if self.off or memoryview(buffer).nbytes < self.FROM:
            return
        try:
            if self._madvise is None:
                import ctypes

                madvise = ctypes.CDLL(None, use_errno=True).madvise
                madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                madvise.restype = ctypes.c_int
                self._ctypes, self._madvise = ctypes, madvise
            start = self._ctypes.addressof(self._ctypes.c_char.from_buffer(buffer))
        except (ImportError, OSError, AttributeError, TypeError, ValueError):
            self.off = True
            return
        low = (start + self.SIZE - 1) & ~(self.SIZE - 1)
        high = (start + memoryview(buffer).nbytes) & ~(self.SIZE - 1)
        if high > low and self._madvise(low, high - low, self._MADV_HUGEPAGE) != 0:
            self.off = True


_huge_pages = _HugePages()


class _FrameStream:
    """The payload of one frame, read from the connection as it is asked
    for: the file pickle's Unpickler reads a large value from. It has what
    the Unpickler uses (read, readinto, readline, peek), never reads past
    its frame (bytes of the next frame that a receive brought stay in the
    connection's buffer), and records a failure of the connection itself
    (``broken``), which is not the value's."""

    def __init__(self, conn: _Conn, left: int) -> None:
        self.conn = conn
        self.left = left
        self.broken: BaseException | None = None

    def _fill(self) -> None:
        """At least one byte of the frame in the connection's buffer."""
        try:
            chunk = self.conn.sock.recv(min(self.left, _READ_CHUNK))
        except OSError as exc:
            self.broken = exc
            raise
        if not chunk:
            self.broken = EOFError("the server closed the connection inside a frame")
            raise self.broken
        self.conn.buf += chunk

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        want = min(len(view), self.left)
        buf = self.conn.buf
        got = min(len(buf), want)
        if want - got >= _huge_pages.FROM:
            _huge_pages.advise(view)
        view[:got] = buf[:got]
        del buf[:got]
        try:
            while got < want:
                n = self.conn.sock.recv_into(view[got:want])
                if n == 0:
                    raise EOFError("the server closed the connection inside a frame")
                got += n
        except (OSError, EOFError) as exc:
            self.broken = exc
            raise
        finally:
            self.left -= got
        return got

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        buf = self.conn.buf
        if n <= len(buf):
            out = bytes(buf[:n])
            del buf[:n]
            self.left -= n
            return out
        out = bytearray(n)
        got = self.readinto(out)
        return bytes(out) if got == n else bytes(out[:got])

    def peek(self, n: int = 0) -> bytes:
        if self.left and not self.conn.buf:
            self._fill()
        return bytes(self.conn.buf[: min(max(n, 1), self.left)])

    def readline(self) -> bytes:
        out = bytearray()
        while self.left:
            buf = self.conn.buf
            if not buf:
                self._fill()
            end = min(len(buf), self.left)
            i = buf.find(b"\n", 0, end)
            take = i + 1 if i >= 0 else end
            out += buf[:take]
            del buf[:take]
            self.left -= take
            if i >= 0:
                break
        return bytes(out)

    def drain(self) -> None:
        """Reads what the frame's reader left, up to the next frame."""
        buf = self.conn.buf
        take = min(len(buf), self.left)
        del buf[:take]
        self.left -= take
        scratch = bytearray(min(self.left, _READ_CHUNK))
        while self.left:
            self.readinto(memoryview(scratch)[: min(self.left, len(scratch))])


class _AdvisedFile(io.FileIO):
    """A shared value's memfd, read from its start; a large object being
    filled from it gets huge pages first."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd, "rb", closefd=True)
        self.seek(0)

    def readinto(self, b: Any) -> int:
        _huge_pages.advise(b)
        return super().readinto(b)


def _read_varint_from(stream: _FrameStream, head: bytearray) -> int:
    """A protobuf varint read from stream (its bytes appended to head); -1
    if the frame ends first or it runs past 64 bits."""
    n = shift = 0
    while shift < 64:
        b = stream.read(1)
        if not b:
            return -1
        head += b
        n |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return n
        shift += 7
    return -1


def _end_error(payload: bytes | bytearray) -> LeanError:
    code = _CODES.get(payload[0], grpc.StatusCode.UNKNOWN) if payload else grpc.StatusCode.UNKNOWN
    return LeanError(code, bytes(payload[1:]).decode("utf-8", "replace"))


class Call:
    """One call in flight on a connection: iterate for its events. Its End
    ends the iteration (OK) or raises LeanError; ``cancel`` (from any
    thread) stops it; ``finish`` gives the connection back, or closes it if
    the call did not end cleanly."""

    def __init__(
        self,
        pool: _Pool,
        key: tuple,
        conn: _Conn,
        request: tuple[bytes, ...],
        load: Callable[[_FrameStream], Any] | None = None,
        parts: tuple[bytes, tuple[bytes, ...]] | None = None,
    ) -> None:
        self._pool, self._key, self._conn = pool, key, conn
        self._load = load
        self._clean = False
        self.cancelled = False
        if conn.shared and parts is not None and sum(map(len, parts[1])) >= _SHARE_FROM:
            conn.send_shared(*parts)
        else:
            conn.send(_RUN, *request)

    def __iter__(self) -> Iterator[pb.RunEvent | ValueEvent]:
        while True:
            kind, payload = self._next()
            if kind == _EVENT:
                event = self._streamed(payload) if isinstance(payload, _FrameStream) else read_event(payload)
                if event.WhichOneof("event") in ("result", "failure"):
                    # The End follows the last event at once (the server
                    # writes both together): taken now, the connection is
                    # clean for the next call even when the caller raises
                    # on this event.
                    self._end()
                yield event
                if self._clean:
                    return
            elif kind == _VALUE_SHARED:
                event = self._shared_value()
                self._end()
                yield event
                return
            elif kind == _END:
                self._ended(payload)
                return
            else:
                raise LeanError(grpc.StatusCode.INTERNAL, f"the server sent a frame of unknown type {kind!r}")

    def _streamed(self, stream: _FrameStream) -> pb.RunEvent | ValueEvent:
        """The event of a large frame being received: a value (a result, or
        one yielded) unpickled as it arrives, by the call's loader, into a
        ValueEvent holding what it returned or raised; any other event is
        read whole and parsed."""
        head = bytearray()
        try:
            tag = _read_varint_from(stream, head)
            size = _read_varint_from(stream, head)
            kind = None
            if tag == YIELDED_TAG and size == stream.left:
                kind = "yielded"
            elif tag == RESULT_TAG and size == stream.left:
                inner = _read_varint_from(stream, head)
                if inner == VALUE_TAG and _read_varint_from(stream, head) == stream.left:
                    kind = "result"
            if kind is None:
                return read_event(bytes(head) + stream.read())
            try:
                loaded = Loaded(self._load(stream))
            except Exception as exc:  # noqa: BLE001 - the value's, raised where it is taken
                if stream.broken is not None:
                    raise stream.broken from None
                loaded = Loaded(error=exc)
            stream.drain()
        except (OSError, EOFError) as exc:
            message = f"the connection failed while receiving a value: {exc}"
            raise LeanError(grpc.StatusCode.UNAVAILABLE, message) from None
        return ValueEvent(kind, loaded)

    def _shared_value(self) -> ValueEvent:
        """The call's value, in the memfd its Value frame brought: unpickled
        from it by the call's loader (a large bytes read straight into the
        object it becomes), or read whole."""
        with io.BufferedReader(_AdvisedFile(self._conn.take_fd())) as f:
            if self._load is None:
                return ValueEvent("result", memoryview(f.read()))
            try:
                loaded = Loaded(self._load(f))
            except Exception as exc:  # noqa: BLE001 - the value's, raised where it is taken
                loaded = Loaded(error=exc)
        return ValueEvent("result", loaded)

    def _end(self) -> None:
        kind, payload = self._next()
        if kind != _END:
            raise LeanError(grpc.StatusCode.INTERNAL, f"the server sent a frame of type {kind!r} after the call's outcome")
        self._ended(payload)

    def _ended(self, payload: bytes | bytearray) -> None:
        """Takes the call's End: a failure raises; else the connection is
        clean for the next call."""
        if payload and payload[0] != 0:
            raise _end_error(payload)
        self._clean = True
        self._conn.used = time.monotonic()

    def _next(self) -> tuple[int, bytes | bytearray]:
        """The next frame other than a Pong; a connection that closed or
        failed is the server's unavailability."""
        try:
            return self._next_frame()
        except EOFError:
            raise LeanError(grpc.StatusCode.UNAVAILABLE, "the server closed the connection") from None
        except OSError as exc:
            raise LeanError(grpc.StatusCode.UNAVAILABLE, f"the connection failed: {exc}") from None

    def _next_frame(self) -> tuple[int, bytes | bytearray]:
        conn, pinged = self._conn, False
        while True:
            try:
                kind, payload = conn.read_frame(stream_values=self._load is not None)
            except TimeoutError:
                if pinged:
                    raise LeanError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"no answer to a keepalive ping within {KEEPALIVE_TIMEOUT:g} s",
                    ) from None
                conn.send(_PING)
                conn.sock.settimeout(KEEPALIVE_TIMEOUT)
                pinged = True
                continue
            if pinged:
                conn.sock.settimeout(KEEPALIVE_TIME)
                pinged = False
            if kind != _PONG:
                return kind, payload

    def cancel(self) -> None:
        if self._clean:
            return  # the call is over
        self.cancelled = True
        try:
            self._conn.send(_CANCEL)
        except OSError:
            pass  # the connection is gone: so is the call

    def finish(self) -> None:
        if self._clean:
            self._pool.put(self._key, self._conn)
        else:
            self._conn.close()


class _Pool:
    """Idle connections by (socket, credentials), of one process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.idle: dict[tuple, list[_Conn]] = {}
        # Closes surplus idle connections while there are any.
        self.reaper: threading.Thread | None = None
        # (target, TLS settings) -> socket path, as the server named it to
        # a channel with those settings: a call whose settings never
        # reached the server (plain text to a TLS server) does not take
        # the socket either.
        self.sockets: dict[tuple[str, object], str] = {}

    def after_fork(self) -> None:
        # The parent's connections are the parent's: dropped, not closed.
        self.lock = threading.Lock()
        self.idle = {}
        self.reaper = None
        self.pid = os.getpid()

    def get(self, key: tuple) -> _Conn:
        now = time.monotonic()
        with self.lock:
            if os.getpid() != self.pid:
                self.after_fork()
            conns = self.idle.get(key)
            while conns:
                conn = conns.pop()
                if now - conn.used < _IDLE_FOR and conn.alive():
                    return conn
                conn.close()
        return _Conn(key[0], key[1])

    def put(self, key: tuple, conn: _Conn) -> None:
        with self.lock:
            if os.getpid() == self.pid:
                conns = self.idle.setdefault(key, [])
                if len(conns) < _MAX_IDLE:
                    conns.append(conn)
                    if len(conns) > 1 and self.reaper is None:
                        self.reaper = threading.Thread(target=self._reap, name="atoll-lean-reaper", daemon=True)
                        self.reaper.start()
                    return
        conn.close()

    def _reap(self) -> None:
        """Closes idle connections beyond each pool's most recent one once
        they idled for _SURPLUS_IDLE_FOR; ends when none are left."""
        while True:
            time.sleep(_SURPLUS_IDLE_FOR / 2)
            now, closing = time.monotonic(), []
            with self.lock:
                if self.reaper is not threading.current_thread():
                    return  # forked: the child's pool is another's
                surplus = False
                for conns in self.idle.values():
                    # Oldest first; the last is the one kept.
                    while len(conns) > 1 and now - conns[0].used >= _SURPLUS_IDLE_FOR:
                        closing.append(conns.pop(0))
                    surplus = surplus or len(conns) > 1
                if not surplus:
                    self.reaper = None
            for conn in closing:
                conn.close()
            if not surplus:
                return


_pool = _Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.after_fork)


def socket_for(target: str, tls: object = None) -> str | None:
    """The lean call socket of the server at target, once it named one to
    a channel with TLS settings tls."""
    return _pool.sockets.get((target, tls))


def wants_socket(target: str, tls: object = None) -> bool:
    """Whether a gRPC call to target should look for the socket's header."""
    return (target, tls) not in _pool.sockets and _loopback(target) and os.environ.get(_ENV) != "0"


def learn(target: str, tls: object, initial_metadata: object) -> None:
    """Records the socket a loopback server named in a Run's headers."""
    for key, value in initial_metadata or ():  # type: ignore[attr-defined]
        if key == HEADER and isinstance(value, str):
            _pool.sockets[(target, tls)] = value
            return


def start(
    target: str,
    tls: object,
    path: str,
    metadata: tuple[tuple[str, str], ...],
    request: tuple[bytes, ...],
    load: Callable[[Any], Any] | None = None,
    parts: tuple[bytes, tuple[bytes, ...]] | None = None,
) -> Call | None:
    """Starts request (the encoded RunRequest, as pieces) on the server's
    socket; None when the socket cannot be used (the call then goes over
    gRPC, and the socket is not tried again until the server names it
    anew). A hello the server refuses (bad credentials) raises its
    LeanError. With load, a large value is unpickled by it as it arrives
    (load reads a file-like object), and its event holds what load returned
    or raised (a Loaded). parts (Call.wire_parts) let large arguments go in
    shared memory."""
    if os.environ.get(_ENV) == "0":
        return None
    key = (path, metadata)
    try:
        conn = _pool.get(key)
    except Unreachable:
        _pool.sockets.pop((target, tls), None)
        return None
    try:
        return Call(_pool, key, conn, request, load, parts)
    except OSError:
        # The request did not go out whole: the server never ran it.
        conn.close()
        _pool.sockets.pop((target, tls), None)
        return None
