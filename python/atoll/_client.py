"""The gRPC client: sends a call to an atoll server and turns the stream of
events into output, a return value or an exception."""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass
from collections.abc import Callable, Generator, Iterator
from typing import Any, TextIO

import grpc

from atoll import _autostart, _channel, _credentials, _lean, _progress
from atoll._call import Call, RunStub
from atoll._errors import CancelledError, ProtocolError, ServerUnavailableError, from_failure, from_rpc_error
from atoll._serialize import loads_value, rebuild_exception
from atoll.v1 import atoll_pb2 as pb


def _write(stream: TextIO, data: bytes) -> None:
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()
        buffer.write(data)
        buffer.flush()
    else:
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()


@dataclass(frozen=True)
class Route:
    """Where a host's calls go: the target, the metadata to send (None: the
    credentials for target), and how to start what serves it when it does
    not answer (``start``, or the local server with ``autostart``)."""

    target: str
    metadata: tuple[tuple[str, str], ...] | None = None
    start: Callable[[str], None] | None = None
    autostart: bool = False

    def starter(self) -> Callable[[str], None] | None:
        if self.start is None and self.autostart:
            return _autostart.ensure
        return self.start


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


def outcome(fn_name: str, result: pb.Result) -> Any:
    """Returns the call's value or raises its exception."""
    if result.WhichOneof("outcome") == "exception":
        e = result.exception
        raise rebuild_exception(e.pickled, e.type_name, e.message, e.traceback)
    return loads_value(fn_name, result.value)


def run(
    target: str,
    call: Call,
    autostart: bool = False,
    *,
    metadata: tuple[tuple[str, str], ...] | None = None,
    start: Callable[[str], None] | None = None,
) -> Any:
    """Runs call on the server at target and returns its value (or raises
    its exception), sending metadata (default: the credentials for target).
    With autostart, a local server is started if none answers; start, if
    given, is called instead to start what serves target (only before
    anything was sent, so a call is never run twice)."""
    gen = stream(target, call, autostart, metadata=metadata, start=start)
    try:
        next(gen)
    except StopIteration as stop:
        return stop.value
    gen.close()
    raise ProtocolError(f"the server sent values as if {call.function_name} were a generator function")


def stream(
    target: str,
    call: Call,
    autostart: bool = False,
    *,
    metadata: tuple[tuple[str, str], ...] | None = None,
    start: Callable[[str], None] | None = None,
) -> Iterator[Any]:
    """Like run, for a generator function: yields each value the function
    yields as it arrives, then returns (or raises its exception). Closing
    the iterator early cancels the call, which stops the worker."""
    request = call.wire_request()
    if start is None and autostart:
        start = _autostart.ensure
    try:
        result = yield from _values(call, _events(target, call, request, metadata))
    except _NotConnected as err:
        if start is None:
            raise err.error from None
        start(target)
        # The server answers now, but gRPC may still hold the failed
        # connection in its reconnect backoff (about a second), even for a
        # new channel: try again until it lets go. Nothing of the call was
        # received, so it never runs twice.
        deadline = time.monotonic() + RECONNECT_AFTER_START
        while True:
            _channel.forget(target)
            try:
                result = yield from _values(call, _events(target, call, request, metadata))
                break
            except _NotConnected as err:
                if time.monotonic() > deadline:
                    raise err.error from None
                time.sleep(0.1)
    return outcome(call.function_name, result)


def _values(call: Call, events: Generator[bytes, None, pb.Result]) -> Generator[Any, None, pb.Result]:
    """Unpickles the values a generator yields; returns the call's result."""
    try:
        while True:
            try:
                data = next(events)
            except StopIteration as stop:
                return stop.value
            yield loads_value(call.function_name, data)
    finally:
        events.close()


# How long a call keeps trying to reach a server it just started.
RECONNECT_AFTER_START = 10.0


class _NotConnected(Exception):
    """The server could not be reached; nothing of the call was received."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _events(
    target: str, call: Call, request: tuple[bytes, ...], metadata: tuple[tuple[str, str], ...] | None = None
) -> Generator[bytes, None, pb.Result]:
    """Runs the call: output is written as it arrives, yielded values are
    yielded, and the result is returned."""
    if metadata is None:  # resolved per attempt: starting a local server saves a key
        metadata = _credentials.resolve(call.credentials, target)
    control = call.control
    lean: _lean.Call | None = None
    tls = _channel.tls_settings()
    path = _lean.socket_for(target, tls)
    if path is not None:
        try:
            load = functools.partial(loads_value, call.function_name)
            lean = _lean.start(target, tls, path, metadata, request, load=load, parts=call.wire_parts())
        except grpc.RpcError as err:  # the socket refused the credentials
            raise from_rpc_error(err, target) from None
    learn = lean is None and _lean.wants_socket(target, tls)
    events = lean if lean is not None else _channel.stub(target, RunStub).Run(b"".join(request), metadata=metadata)
    if control is not None:
        control.attach(events)
    result: pb.Result | None = None
    received = False
    queued_shown = False
    # On a terminal, an environment build shows its progress (the server
    # sums uv's resolved/downloaded/installed counts) on a line of its own
    # below uv's lines.
    progress = _progress.StatusLine(sys.stderr) if _progress.is_terminal(sys.stderr) else None
    building = False
    try:
        for event in events:
            received = True
            kind = event.WhichOneof("event")
            if progress is not None and kind == "status" and event.status.phase == pb.PHASE_BUILDING_ENVIRONMENT:
                if event.status.message.startswith(_BUILD_PROGRESS):
                    building = True
                    progress.show("atoll: " + event.status.message)
                continue
            if progress is not None and building and (kind != "output" or event.output.stream != pb.STREAM_SYSTEM):
                building = False
                progress.done()
            if kind == "output":
                if progress is not None and building:
                    progress.clear()
                    write_output(event.output)
                    progress.redraw()
                else:
                    write_output(event.output)
            elif kind == "yielded":
                yield event.yielded
            elif kind == "result":
                result = event.result
            elif kind == "failure":
                raise from_failure(event.failure)
            elif kind == "status" and event.status.phase == pb.PHASE_QUEUED and not queued_shown:
                # The other phases pass unseen: a call that waits for
                # capacity is the one a caller cannot tell from a hang.
                queued_shown = True
                write_output(queued_line(event.status, call.machine_type))
    except grpc.RpcError as err:
        if control is not None and control.cancelled:
            raise CancelledError(f"the call of {call.function_name} was cancelled") from None
        error = from_rpc_error(err, target)
        if not received and isinstance(error, ServerUnavailableError):
            raise _NotConnected(error) from None
        if isinstance(error, ServerUnavailableError):
            details = err.details() if hasattr(err, "details") else str(err)
            error = ServerUnavailableError(
                f"the atoll server at {target} went away during the call "
                f"(it stopped, crashed or stopped answering: {details}); "
                "whether the call finished is unknown"
            )
        raise error from None
    except BaseException:
        events.cancel()
        raise
    finally:
        if progress is not None and building:
            progress.done()
        if control is not None:
            control.detach()
        if lean is not None:
            lean.finish()
        elif learn and received:  # the headers came with the first event
            _learn_socket(target, tls, events)
    if result is None:
        raise ProtocolError(f"the server at {target} ended the call without a result")
    return result


def _learn_socket(target: str, tls: _channel.TLS, rpc: Any) -> None:
    """Records the lean call socket a server named in its headers. Never
    raises: it runs while the call's own outcome or exception is on its
    way."""
    try:
        _lean.learn(target, tls, rpc.initial_metadata())
    except Exception:  # noqa: BLE001 - the call stays on gRPC
        pass


def queued_line(status: pb.Status, machine_type: str) -> pb.Output:
    """The one line a caller waiting for capacity sees."""
    text = status.message or f"waiting for capacity for machine type {machine_type}"
    if status.queue_position:
        text += (f"\nplace {status.queue_position} in line: the host's capacity for this machine type is in use; "
                 "the call starts when a worker ends")
    return _system_line(text)


# How the server's build progress messages begin (envbuild.Progress).
_BUILD_PROGRESS = "building environment:"


def _system_line(text: str) -> pb.Output:
    return pb.Output(stream=pb.STREAM_SYSTEM, data=text.encode() + b"\n")
