"""host=local: runs isolated functions on this machine, without a server.

Each call goes to a local worker: an ``atoll worker --local`` process, the
same Go agent the server starts, which first builds (or reuses) the
function's environment with uv under the user's cache directory, exactly as
the server builds its own, then runs the Python runner in it. The agent
speaks the worker protocol on its stdin and stdout: WorkerCall and
WorkerEvent messages (api/atoll/v1/atoll.proto), each preceded by its length
as a protobuf varint; a call's function and arguments, and a return value,
follow their message as raw bytes of the size it states.

Warm workers are kept per (function, Python version, requirements) for
keep_alive seconds after each call, as the server keeps them, and stopped
when this interpreter exits. Machine types set no limits here.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
from typing import IO, Any

from atoll import _binary
from atoll._call import Call
from atoll._client import outcome, write_output
from atoll._errors import AtollError, ProtocolError, SerializationError, WorkerCrashedError, from_failure
from atoll.v1 import atoll_pb2 as pb

_Key = tuple[str, str, tuple[str, ...]]


def atoll_binary() -> str:
    """The atoll binary that runs local workers."""
    return _binary.find("host=local", AtollError)


def env_root() -> str:
    """Where local environments, their uv cache and the SDK live:
    ``$XDG_CACHE_HOME/atoll``, else ``~/.cache/atoll``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore relative paths
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "atoll")


def _write_message(stream: IO[bytes], message: Any, *raw: bytes) -> None:
    data = message.SerializeToString()
    n = len(data)
    head = bytearray()
    while n > 0x7F:
        head.append((n & 0x7F) | 0x80)
        n >>= 7
    head.append(n)
    for chunk in (head, data, *raw):
        stream.write(chunk)
    stream.flush()


def _read_event(stream: IO[bytes]) -> pb.WorkerEvent | None:
    """The next event, or None when the agent closed its output."""
    size = shift = 0
    while True:
        byte = stream.read(1)
        if not byte:
            return None
        size |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            break
        shift += 7
        if shift > 63:
            raise ProtocolError("the local worker sent a malformed message length")
    data = stream.read(size)
    if len(data) != size:
        return None
    event = pb.WorkerEvent()
    event.ParseFromString(data)
    return event


class _Worker:
    """One local agent process, in its own process group."""

    def __init__(self, key: _Key, proc: subprocess.Popen[bytes]):
        self.key = key
        self.proc = proc
        self.timer: threading.Timer | None = None
        # Counts releases, so that a keep_alive timer that fired just as a
        # call took the worker cannot stop it after a later release.
        self.generation = 0
        self._stopped = False

    @classmethod
    def start(cls, key: _Key, environment: pb.Environment) -> _Worker:
        args = [
            atoll_binary(), "worker", "--local",
            "--env-root", env_root(),
            "--python-version", environment.python_version,
            *(f"--requirement={r}" for r in environment.requirements),
        ]
        # A session of its own: the terminal's Ctrl-C goes to the caller,
        # which then stops the worker's whole process group.
        proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, env=_binary.tool_env()
        )
        worker = cls(key, proc)
        try:
            worker._await_ready()
        except BaseException:
            worker.stop()
            raise
        return worker

    def _await_ready(self) -> None:
        """Forwards the environment build's output until the runner is up."""
        while True:
            event = _read_event(self.proc.stdout)
            if event is None:
                raise self._crashed("the local atoll worker exited while starting (its error, if any, is above)")
            kind = event.WhichOneof("event")
            if kind == "ready":
                return
            if kind == "output":
                write_output(event.output)
            elif kind == "failure":
                raise from_failure(event.failure)

    def call(self, function: bytes, arguments: bytes) -> pb.Result:
        """Runs one call, forwarding its output; raises what the agent reports."""
        head = pb.WorkerCall(function_size=len(function), arguments_size=len(arguments))
        try:
            _write_message(self.proc.stdin, head, function, arguments)
        except (OSError, ValueError):
            raise self._crashed("the local worker was gone before the call started") from None
        while True:
            event = _read_event(self.proc.stdout)
            if event is None:
                raise self._crashed("the local worker died during the call")
            kind = event.WhichOneof("event")
            if kind == "output":
                write_output(event.output)
            elif kind == "value":
                value = self.proc.stdout.read(event.value.size)
                if len(value) != event.value.size:
                    raise self._crashed("the local worker died while returning the value")
                return pb.Result(value=value)
            elif kind == "result":  # the function raised
                return event.result
            elif kind == "failure":
                raise from_failure(event.failure)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _crashed(self, what: str) -> WorkerCrashedError:
        # The agent closed its output: it is exiting; let its status be its own.
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self.stop()
        if code is None:
            return WorkerCrashedError(f"{what}; it stopped answering and was killed")
        if code < 0:
            return WorkerCrashedError(f"{what}: killed by signal {-code}", -1, -code)
        return WorkerCrashedError(f"{what}: exit status {code}", code)

    def stop(self) -> None:
        """Ends the agent, the runner and whatever they started."""
        if self._stopped:
            return
        self._stopped = True
        if self.timer is not None:
            self.timer.cancel()
        # The group outlives the agent while anything it started still runs,
        # and its id cannot be reused until the group is empty.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class _Pool:
    """Warm local workers, one call at a time each."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[_Key, list[_Worker]] = {}
        self._busy: set[_Worker] = set()

    def acquire(self, key: _Key, environment: pb.Environment) -> _Worker:
        """A warm idle worker for key, or a new one."""
        dead = []
        found = None
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                worker = idle.pop()  # the most recently used
                if worker.timer is not None:
                    worker.timer.cancel()
                if worker.alive():
                    found = worker
                    break
                dead.append(worker)
            if not idle:
                self._idle.pop(key, None)
            if found is not None:
                self._busy.add(found)
        for worker in dead:
            worker.stop()
        if found is not None:
            return found
        worker = _Worker.start(key, environment)
        with self._lock:
            self._busy.add(worker)
        return worker

    def release(self, worker: _Worker, keep_alive: float) -> None:
        """Keeps a healthy worker warm for keep_alive seconds (0: stops it)."""
        with self._lock:
            self._busy.discard(worker)
            if keep_alive > 0 and worker.alive():
                worker.generation += 1
                timer = threading.Timer(keep_alive, self._expire, (worker, worker.generation))
                timer.daemon = True
                worker.timer = timer
                self._idle.setdefault(worker.key, []).append(worker)
                timer.start()
                return
        worker.stop()

    def discard(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
        worker.stop()

    def _expire(self, worker: _Worker, generation: int) -> None:
        with self._lock:
            idle = self._idle.get(worker.key, [])
            if worker.generation != generation or worker not in idle:
                return  # a call took it meanwhile
            idle.remove(worker)
            if not idle:
                self._idle.pop(worker.key, None)
        worker.stop()

    def shutdown(self) -> None:
        """Stops every worker, warm or busy."""
        with self._lock:
            workers = [w for idle in self._idle.values() for w in idle] + list(self._busy)
            self._idle.clear()
            self._busy.clear()
        for worker in workers:
            worker.stop()


_pool = _Pool()
atexit.register(_pool.shutdown)
# A forked child must not use, or stop, its parent's workers.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool._reset)


def run(call: Call) -> Any:
    """Runs one call in a local worker and returns its value (or raises
    its exception)."""
    environment = call.environment.proto()
    key = (call.function_name, environment.python_version, tuple(sorted(environment.requirements)))
    worker = _pool.acquire(key, environment)
    try:
        result = worker.call(call.function, call.arguments)
    except SerializationError:
        _pool.release(worker, call.keep_alive)  # a bad return value leaves the worker sound
        raise
    except BaseException:
        _pool.discard(worker)
        raise
    _pool.release(worker, call.keep_alive)
    return outcome(call.function_name, result)
