"""One call of an isolated function, as a value: what a host needs to run
it, already serialized. ``IsolatedFunction`` builds it; hosts consume it
and never reach back into the function."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from atoll import _pickling
from atoll._credentials import CloudKeyCredentials
from atoll.v1 import atoll_pb2 as pb


@dataclass(frozen=True)
class Retries:
    """How a call is retried when an attempt fails.

    ``count`` attempts after the first; ``backoff`` seconds before the
    first retry, doubled for each later one. By default only
    infrastructure failures are retried (the worker crashed or was lost);
    ``exceptions=True`` retries the function's own exceptions too, and
    ``out_of_memory=True`` a worker killed for exceeding its memory. Every
    attempt is a run of its own in ``atoll runs``, linked to the call.
    Retried functions should be idempotent: an attempt may have done part
    of its work before it failed.

    Example::

        @isolated(retries=Retries(count=3, backoff=0.5))
        def fetch(url): ...
    """

    count: int = 0
    backoff: float = 1.0
    exceptions: bool = False
    out_of_memory: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or not 0 <= self.count <= 10:
            raise ValueError(f"retries count must be an int from 0 to 10, got {self.count!r}")
        if isinstance(self.backoff, bool) or not isinstance(self.backoff, (int, float)) or not 0 <= self.backoff <= 300:
            raise ValueError(f"retries backoff must be 0 to 300 seconds, got {self.backoff!r}")

    def proto(self) -> pb.RetryPolicy:
        return pb.RetryPolicy(
            max_retries=self.count,
            backoff_seconds=float(self.backoff),
            retry_exceptions=self.exceptions,
            retry_out_of_memory=self.out_of_memory,
        )


class CallControl:
    """Cancels a call in flight from another thread: its RPC is cancelled,
    so the server kills the worker and records the run as cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rpc: Any = None
        self.cancelled = False

    def attach(self, rpc: Any) -> None:
        with self._lock:
            self._rpc = rpc
            if self.cancelled:
                rpc.cancel()

    def detach(self) -> None:
        with self._lock:
            self._rpc = None

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._rpc is not None:
                self._rpc.cancel()


@dataclass(frozen=True)
class EnvironmentSpec:
    """The environment a call runs in: the caller's Python major.minor
    ("3.11") and pip requirement strings."""

    python_version: str
    requirements: tuple[str, ...] = ()

    def proto(self) -> pb.Environment:
        """The environment as the Functions API sends it."""
        return pb.Environment(python_version=self.python_version, requirements=list(self.requirements))


@dataclass(frozen=True)
class Call:
    """One call: the function and its arguments pickled, where it runs and
    for how long its worker stays warm.

    ``function_name`` names the function in errors and in the server's
    records; ``arguments`` are the pickled arguments as pieces whose
    concatenation is the payload (dumps_arguments); ``credentials`` are the
    caller's explicit ones, if any (else the host finds them in the
    environment).
    """

    function_name: str
    function: bytes = field(repr=False)
    arguments: tuple[bytes, ...] = field(repr=False)
    environment: EnvironmentSpec
    machine_type: str
    keep_alive: float
    credentials: CloudKeyCredentials | None = None
    timeout: float | None = None
    retries: Retries | None = None
    secrets: tuple[str, ...] = ()
    # Set by submit(): lets another thread cancel the call.
    control: CallControl | None = field(default=None, compare=False, repr=False)

    def request(self, arguments: bool = True) -> pb.RunRequest:
        """The call as the Functions API's Run request (without its
        arguments if not arguments)."""
        req = pb.RunRequest(
            function_name=self.function_name,
            function=self.function,
            arguments=b"".join(self.arguments) if arguments else b"",
            environment=self.environment.proto(),
            machine_type=self.machine_type,
            keep_alive_seconds=float(self.keep_alive),
            timeout_seconds=float(self.timeout or 0),
            secrets=list(self.secrets),
            needs_cloudpickle=_pickling.needs_cloudpickle(self.function),
        )
        if self.retries is not None and self.retries.count:
            req.retries.CopyFrom(self.retries.proto())
        return req

    def wire_request(self) -> tuple[bytes, ...]:
        """The Run request encoded as the Functions API receives it, as
        pieces whose concatenation is the encoding: the arguments' pieces
        are not copied (a lean call writes them from where they are; gRPC
        takes them joined), and never go through a protobuf message, which
        would copy them twice more. Protobuf reads fields in
        any order, so they go last."""
        head = self._head()
        size = sum(map(len, self.arguments))
        tag = b"".join((head, _ARGUMENTS_TAG, _varint(size)))
        if len(self.arguments) == 1 and size < _SEPARATE_PIECE:
            return (tag + self.arguments[0],)
        return (tag, *self.arguments)

    def wire_parts(self) -> tuple[bytes, tuple[bytes, ...]]:
        """The Run request without its arguments, encoded, and the
        arguments' pieces: what a lean call sends when the arguments go in
        shared memory."""
        return self._head(), self.arguments

    def _head(self) -> bytes:
        """The request without its arguments, encoded; kept for the next
        call of the same function with the same options (the calls of a warm
        loop differ only in their arguments, and the function's pickle is
        kept as the same object while it would come out the same)."""
        key = (self.environment, self.machine_type, self.keep_alive, self.timeout, self.retries, self.secrets)
        kept = _heads.get(self.function_name)
        if kept is not None and kept[0] is self.function and kept[1] == key:
            return kept[2]
        head = self.request(arguments=False).SerializeToString()
        if len(_heads) >= _KEPT_HEADS:
            _heads.clear()
        _heads[self.function_name] = (self.function, key, head)
        return head


# The encoded heads of the last calls, by function name; at most this many.
_heads: dict[str, tuple[bytes, tuple[Any, ...], bytes]] = {}
_KEPT_HEADS = 256


# Arguments this large are sent as pieces of their own, not copied behind
# the rest of the request.
_SEPARATE_PIECE = 64 << 10


# RunRequest.arguments: field 3, length-delimited.
_ARGUMENTS_TAG = bytes([3 << 3 | 2])


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class RunStub:
    """Functions.Run for a request already encoded (Call.wire_request),
    its large values read without protobuf (read_event)."""

    def __init__(self, channel: Any) -> None:
        self.Run = channel.unary_stream(
            "/atoll.v1.Functions/Run", request_serializer=None, response_deserializer=read_event
        )


# Events at least this large are looked at for a value to read in place.
_LARGE_EVENT = 1 << 20
# RunEvent.result (3), RunEvent.yielded (5), Result.value (1): all
# length-delimited.
RESULT_TAG, YIELDED_TAG, VALUE_TAG = 3 << 3 | 2, 5 << 3 | 2, 1 << 3 | 2


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    n = shift = 0
    while pos < len(view) and shift < 64:
        b = view[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7
    return -1, pos


def _only_field(view: memoryview, pos: int) -> tuple[int, int]:
    """(tag, start) of a message made of one length-delimited field that
    runs to the end of view; (-1, 0) for anything else."""
    tag, pos = _read_varint(view, pos)
    n, pos = _read_varint(view, pos)
    if n < 0 or pos + n != len(view):
        return -1, 0
    return tag, pos


class Loaded:
    """A value unpickled as it arrived, or the exception unpickling it
    raised: ``get`` returns the one or raises the other."""

    __slots__ = ("value", "error")

    def __init__(self, value: Any = None, error: Exception | None = None) -> None:
        self.value = value
        self.error = error

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class ValueEvent:
    """A RunEvent that carries a large value (a result's or a yielded one),
    read in place: its value is a view of the received message, which the
    caller unpickles from, where protobuf would have copied it twice (into
    a message, then out as bytes); or, from a lean call, the value already
    unpickled as it arrived (a Loaded). It answers as RunEvent and Result
    do."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: memoryview | Loaded) -> None:
        self.kind = kind
        self.value = value

    def WhichOneof(self, oneof: str) -> str:  # noqa: N802 - protobuf's name
        return self.kind if oneof == "event" else "value"

    @property
    def result(self) -> ValueEvent:
        return self

    @property
    def yielded(self) -> memoryview | Loaded:
        return self.value


def read_event(data: bytes) -> pb.RunEvent | ValueEvent:
    """A RunEvent as received: a large result value or yielded value in
    place (ValueEvent), anything else parsed by protobuf."""
    if len(data) >= _LARGE_EVENT:
        view = memoryview(data)
        tag, start = _only_field(view, 0)
        if tag == YIELDED_TAG:
            return ValueEvent("yielded", view[start:])
        if tag == RESULT_TAG:
            inner, at = _only_field(view, start)
            if inner == VALUE_TAG:
                return ValueEvent("result", view[at:])
    return pb.RunEvent.FromString(data)
