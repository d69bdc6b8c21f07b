"""f.map and f.starmap: one function over many inputs, through the server's
Map stream.

Inputs are pickled and sent as the server asks for them, results yielded
as they arrive: at most ``window`` items are between being sent and being
handed to the caller, so neither side holds the whole input or output, and
no thread is started per item (gRPC's own thread feeds the request stream).
The server spreads the items over warm workers of the function's pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from atoll import _autostart, _channel, _credentials
from atoll._call import Call
from atoll._client import Route, outcome, queued_line, write_output
from atoll._errors import AtollError, ProtocolError, from_failure, from_rpc_error
from atoll._serialize import dumps_arguments
from atoll.v1 import atoll_pb2 as pb
from atoll.v1 import atoll_pb2_grpc as pb_grpc

# Items in flight (sent, not yet handed to the caller) when the caller sets
# no max_concurrency: enough to keep every worker of a big host busy.
DEFAULT_WINDOW = 256

# Items sent in one message at most, and how long a batch waits for a slow
# input iterator.
BATCH = 64
BATCH_WAIT = 0.005


def _with_index(exc: BaseException, index: int) -> BaseException:
    """Names the failed item: atoll's own errors in their message, the
    function's own exceptions in a note (their message is the user's)."""
    where = f"item {index} of the map"
    if isinstance(exc, AtollError):
        new = exc.__class__.__new__(exc.__class__)
        new.__dict__.update(exc.__dict__)
        new.args = (f"{where}: {exc}",) + tuple(exc.args[1:])
        return new
    note = f"atoll: raised by {where}"
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # Python 3.10: no add_note, but the attribute is what 3.11 reads
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]
    return exc


class _Feed:
    """The request stream: the function once, then the items, each sent only
    while fewer than window items are in flight."""

    def __init__(self, start: pb.RunRequest, items: Iterator[tuple[tuple, dict]], call: Call, window: int,
                 requirements: tuple[str, ...]) -> None:
        self.start = start
        self.items = items
        self.call = call
        self.requirements = requirements
        self.slots = threading.Semaphore(window)
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.finished = False  # the inputs are exhausted (or failed)
        # Items that failed here, before reaching the server (an argument
        # that cannot be pickled, the input iterator raising).
        self.local: dict[int, BaseException] = {}
        self.index = 0

    def __iter__(self) -> Iterator[pb.MapRequest]:
        yield pb.MapRequest(start=self.start)
        self.index = 0
        try:
            while not self.stopped.is_set():
                while not self.slots.acquire(timeout=0.1):
                    if self.stopped.is_set():
                        return
                batch: list[pb.MapItem] = []
                more = self._next(batch)
                # Whatever else may go now goes in the same message; a slow
                # input iterator holds a batch up for BATCH_WAIT at most.
                deadline = time.monotonic() + BATCH_WAIT
                while more and len(batch) < BATCH and time.monotonic() < deadline and self.slots.acquire(blocking=False):
                    more = self._next(batch)
                if batch:
                    yield pb.MapRequest(items=pb.MapItems(items=batch))
                if not more:
                    return
        finally:
            with self.lock:
                self.finished = True

    def _next(self, batch: list[pb.MapItem]) -> bool:
        """Takes the next input (its slot already held) into batch; False
        once there is none."""
        index = self.index
        try:
            args, kwargs = next(self.items)
        except StopIteration:
            self.slots.release()
            return False
        except BaseException as exc:  # noqa: BLE001 - the caller's iterable failed: its turn raises it
            with self.lock:
                self.local[index] = exc
                self.sent = index + 1
            self.slots.release()
            return False
        self.index = index + 1
        try:
            data = dumps_arguments(self.call.function_name, args, kwargs, self.requirements)
        except BaseException as exc:  # noqa: BLE001 - reported in the item's place
            with self.lock:
                self.local[index] = exc
                self.sent = index + 1
            self.slots.release()
            return True
        with self.lock:
            self.sent = index + 1
        batch.append(pb.MapItem(index=index, arguments=b"".join(data)))
        return True


def run_map(
    route: Route,
    call: Call,
    items: Iterable[tuple[tuple, dict]],
    *,
    requirements: tuple[str, ...],
    ordered: bool,
    return_exceptions: bool,
    max_concurrency: int | None,
) -> Iterator[Any]:
    """Runs call's function over items ((args, kwargs) pairs) and yields the
    results; see IsolatedFunction.map."""
    start = call.request()
    start.arguments = b""
    if max_concurrency:
        start.max_concurrency = max_concurrency
    window = 2 * max_concurrency if max_concurrency else DEFAULT_WINDOW
    starter = route.starter()
    if starter is not None and not _autostart.answers(route.target):
        # A map's inputs cannot be replayed once sent: start the server
        # before anything is.
        starter(route.target)
        _channel.forget(route.target)
    metadata = route.metadata
    if metadata is None:
        metadata = _credentials.resolve(call.credentials, route.target)

    feed = _Feed(start, iter(items), call, window, requirements)
    responses = _channel.stub(route.target, pb_grpc.FunctionsStub).Map(iter(feed), metadata=metadata)
    ready: dict[int, tuple[str, Any]] = {}
    next_index = 0
    queued_shown = False

    def take(index: int) -> Any:
        kind, payload = ready.pop(index)
        if kind != "local":  # a local failure gave its slot back at once
            feed.slots.release()
        if kind == "result":
            try:
                return outcome(call.function_name, payload)
            except BaseException as exc:  # noqa: BLE001
                error: BaseException = exc
        elif kind == "failure":
            error = from_failure(payload)
        else:
            error = payload
        if return_exceptions:
            return _with_index(error, index) if isinstance(error, AtollError) else error
        raise _with_index(error, index)

    def drain_local() -> None:
        with feed.lock:
            for index, exc in list(feed.local.items()):
                feed.local.pop(index)
                ready[index] = ("local", exc)

    try:
        events = iter(responses)
        while True:
            drain_local()
            if ordered:
                while next_index in ready:
                    index = next_index
                    next_index += 1
                    yield take(index)
            else:
                for index in list(ready):
                    next_index += 1
                    yield take(index)
            with feed.lock:
                done = feed.finished and next_index >= feed.sent and not feed.local
            if done:
                break
            try:
                event = next(events)
            except StopIteration:
                drain_local()
                if ready:
                    continue
                with feed.lock:
                    missing = feed.sent - next_index
                if missing > 0:
                    raise ProtocolError(f"the server ended the map with {missing} item(s) unanswered")
                break
            for ev in event.batch or (event,):
                kind = ev.WhichOneof("event")
                if kind == "output":
                    write_output(ev.output)
                elif kind == "status":
                    if ev.status.phase == pb.PHASE_QUEUED and not queued_shown:
                        queued_shown = True
                        write_output(queued_line(ev.status, call.machine_type))
                elif kind == "result":
                    ready[ev.index] = ("result", ev.result)
                elif kind == "failure":
                    ready[ev.index] = ("failure", ev.failure)
    except grpc.RpcError as err:
        raise from_rpc_error(err, route.target) from None
    finally:
        # Breaking out, an error, Ctrl-C: the server cancels what still
        # runs and its workers are freed.
        feed.stopped.set()
        responses.cancel()


def check_not_generator(func: Callable, what: str) -> None:
    import inspect

    if inspect.isgeneratorfunction(func):
        raise TypeError(f"{what} does not take a generator function; call it and iterate over what it yields")

