"""The gRPC client: sends a call to an atoll server and turns the stream of
events into output, a return value or an exception."""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable

import grpc
import grpc.experimental

from atoll import _credentials
from atoll._errors import ProtocolError, ServerUnavailableError, from_failure, from_rpc_error
from atoll._serialize import dumps_arguments, dumps_function, loads_value, rebuild_exception
from atoll.v1 import atoll_pb2 as pb
from atoll.v1 import atoll_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from atoll._api import IsolatedFunction

_MAX_MESSAGE = 2**31 - 1
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
]
# Run calls are unary-stream: handled in the calling thread, they skip a
# thread hand-off per event.
_SINGLE_THREADED = getattr(getattr(grpc.experimental, "ChannelOptions", None), "SingleThreadedUnaryStream", None)
if _SINGLE_THREADED:
    _CHANNEL_OPTIONS.append((_SINGLE_THREADED, 1))

# Channels are kept with their stubs: a stub alone does not keep its
# channel open.
_stubs: dict[tuple[str, str | None, bool], tuple[grpc.Channel, pb_grpc.FunctionsStub]] = {}
_stubs_lock = threading.Lock()


def _tls_settings() -> tuple[str | None, bool]:
    """TLS for channels: a CA certificate from ATOLL_TLS_CA (or the
    credentials file's tls_ca), or ATOLL_TLS=1 for the system's roots."""
    return os.environ.get("ATOLL_TLS_CA") or _credentials.load_saved().get("tls_ca"), os.environ.get("ATOLL_TLS") == "1"


def channel_for(target: str) -> grpc.Channel:
    """A new channel to target, with TLS as _tls_settings says; a unix
    socket (``unix:/path``, host=local's supervisor) never leaves this
    machine and takes no TLS."""
    if target.startswith("unix:"):
        # The supervisor keeps a process's warm workers while its connection
        # lives: an idle channel must not drop it after gRPC's 30 minutes.
        # A channel of its own connections: one opened after the supervisor
        # started must not share a connection still backing off from before.
        options = [*_CHANNEL_OPTIONS, ("grpc.client_idle_timeout_ms", 2**31 - 1), ("grpc.use_local_subchannel_pool", 1)]
        return grpc.insecure_channel(target, options=options)
    ca, system_roots = _tls_settings()
    if ca:
        with open(ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        return grpc.secure_channel(target, creds, options=_CHANNEL_OPTIONS)
    if system_roots:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=_CHANNEL_OPTIONS)
    return grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)


def _stub(target: str) -> pb_grpc.FunctionsStub:
    key = (target, *_tls_settings())
    with _stubs_lock:
        cached = _stubs.get(key)
        if cached is None:
            channel = channel_for(target)
            cached = _stubs[key] = (channel, pb_grpc.FunctionsStub(channel))
        return cached[1]


def _forget(target: str) -> None:
    """Closes and drops the cached channel to target."""
    with _stubs_lock:
        cached = _stubs.pop((target, *_tls_settings()), None)
    if cached is not None:
        cached[0].close()


def _write(stream: Any, data: bytes) -> None:
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()
        buffer.write(data)
        buffer.flush()
    else:
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()


def write_output(out: pb.Output) -> None:
    """Writes a worker's output event to this process's stdout or stderr;
    atoll's own lines (such as environment build logs) go to stderr, each
    prefixed with "atoll: "."""
    if out.stream == pb.STREAM_STDOUT:
        _write(sys.stdout, out.data)
    elif out.stream == pb.STREAM_STDERR:
        _write(sys.stderr, out.data)
    else:
        _write(sys.stderr, b"".join(b"atoll: " + line for line in out.data.splitlines(keepends=True)))


def request_for(fn: IsolatedFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> pb.RunRequest:
    opts = fn.options
    return pb.RunRequest(
        function_name=fn.name,
        function=dumps_function(fn.func),
        arguments=dumps_arguments(fn.name, args, kwargs),
        environment=pb.Environment(python_version=opts.python_version, requirements=list(opts.requirements)),
        machine_type=opts.machine_type,
        keep_alive_seconds=float(opts.keep_alive),
    )


def outcome(fn_name: str, result: pb.Result) -> Any:
    """Returns the call's value or raises its exception."""
    if result.WhichOneof("outcome") == "exception":
        e = result.exception
        raise rebuild_exception(e.pickled, e.type_name, e.message, e.traceback)
    return loads_value(fn_name, result.value)


def run(
    target: str,
    fn: IsolatedFunction,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    autostart: bool = False,
    *,
    metadata: tuple[tuple[str, str], ...] | None = None,
    start: Callable[[str], None] | None = None,
) -> Any:
    """Runs fn on the server at target, sending metadata (default: the
    credentials for target). With autostart, a local server is started if
    none answers; start, if given, is called instead to start what serves
    target (only before anything was sent, so a call is never run twice)."""
    request = request_for(fn, args, kwargs)
    if start is None and autostart:
        from atoll import _autostart

        start = _autostart.ensure
    try:
        return _run(target, fn, request, metadata)
    except _NotConnected as err:
        if start is None:
            raise err.error from None
    start(target)
    _forget(target)  # its channel may still be backing off from the failed connect
    try:
        return _run(target, fn, request, metadata)
    except _NotConnected as err:
        raise err.error from None


class _NotConnected(Exception):
    """The server could not be reached; nothing of the call was received."""

    def __init__(self, error: Exception):
        self.error = error


def _run(target: str, fn: IsolatedFunction, request: pb.RunRequest, metadata: tuple[tuple[str, str], ...] | None = None) -> Any:
    if metadata is None:  # resolved per attempt: starting a local server saves a key
        metadata = _credentials.resolve(fn.options.credentials, target)
    call = _stub(target).Run(request, metadata=metadata)
    result: pb.Result | None = None
    received = False
    try:
        for event in call:
            received = True
            kind = event.WhichOneof("event")
            if kind == "output":
                write_output(event.output)
            elif kind == "result":
                result = event.result
            elif kind == "failure":
                raise from_failure(event.failure)
    except grpc.RpcError as err:
        error = from_rpc_error(err, target)
        if not received and isinstance(error, ServerUnavailableError):
            raise _NotConnected(error) from None
        raise error from None
    except BaseException:
        call.cancel()
        raise
    if result is None:
        raise ProtocolError(f"the server at {target} ended the call without a result")
    return outcome(fn.name, result)
