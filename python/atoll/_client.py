"""The gRPC client: sends a call to an atoll server and turns the stream of
events into output, a return value or an exception."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

import grpc

from atoll import _credentials
from atoll._errors import ProtocolError, from_failure, from_rpc_error
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

_stubs: dict[str, pb_grpc.FunctionsStub] = {}
_stubs_lock = threading.Lock()


def _stub(target: str) -> pb_grpc.FunctionsStub:
    with _stubs_lock:
        stub = _stubs.get(target)
        if stub is None:
            channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
            stub = _stubs[target] = pb_grpc.FunctionsStub(channel)
        return stub


def _write(stream: Any, data: bytes) -> None:
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()
        buffer.write(data)
        buffer.flush()
    else:
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()


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


def run(target: str, fn: IsolatedFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = request_for(fn, args, kwargs)
    metadata = _credentials.resolve(fn.options.credentials)
    call = _stub(target).Run(request, metadata=metadata)
    result: pb.Result | None = None
    try:
        for event in call:
            kind = event.WhichOneof("event")
            if kind == "output":
                out = event.output
                if out.stream == pb.STREAM_STDOUT:
                    _write(sys.stdout, out.data)
                elif out.stream == pb.STREAM_STDERR:
                    _write(sys.stderr, out.data)
                else:  # atoll's own lines, such as environment build logs
                    _write(sys.stderr, b"".join(b"atoll: " + line for line in out.data.splitlines(keepends=True)))
            elif kind == "result":
                result = event.result
            elif kind == "failure":
                raise from_failure(event.failure)
    except grpc.RpcError as err:
        raise from_rpc_error(err, target) from None
    except BaseException:
        call.cancel()
        raise
    if result is None:
        raise ProtocolError(f"the server at {target} ended the call without a result")
    return outcome(fn.name, result)
