"""f.submit and f.call_async: a call running in the background, as a
``concurrent.futures.Future`` or an awaitable.

Calls run on one small thread pool per process (gRPC's sync stubs block a
thread for the length of a call); a future's ``cancel()`` works while the
call runs, too: its RPC is cancelled, so the server kills the worker and
records the run as cancelled.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from atoll._call import Call, CallControl

# Calls running at once through submit; more wait their turn (pending, and
# so cancellable without reaching the server).
MAX_RUNNING = 32

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    import os

    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=MAX_RUNNING, thread_name_prefix="atoll-call")
            _pool_pid = os.getpid()
        return _pool


class CallFuture(Future):
    """The future of one call. Unlike a plain ``Future``, ``cancel()``
    succeeds while the call runs, and stops it: the worker is killed. Until
    the call ends, ``running()`` reports False."""

    def __init__(self, control: CallControl) -> None:
        super().__init__()
        self._control = control

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._control.cancel()
        return True


def submit(run: Callable[[Call], Any], call: Call) -> CallFuture:
    """Runs call with run on the pool; returns its future."""
    control = CallControl()
    call = replace(call, control=control)
    future = CallFuture(control)

    def work() -> None:
        # The future stays pending while the call runs, so that cancel()
        # keeps working; set_running_or_notify_cancel tells waiters the end.
        if future.cancelled():
            future.set_running_or_notify_cancel()
            return
        try:
            value = run(call)
        except BaseException as exc:  # noqa: BLE001 - it belongs to the future
            if future.set_running_or_notify_cancel():
                future.set_exception(exc)
            return
        if future.set_running_or_notify_cancel():
            future.set_result(value)

    _executor().submit(work)
    return future


async def call_async(run: Callable[[Call], Any], call: Call) -> Any:
    """Awaits call without blocking the event loop; cancelling the task
    cancels the call."""
    return await asyncio.wrap_future(submit(run, call))
