"""End-to-end calls against a real atoll server: values, serialization,
output, exceptions and crashes."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import atoll
from atoll import isolated


def test_returns_value_with_args_and_kwargs(server):
    @isolated()
    def add(a, b, *, scale=1):
        return (a + b) * scale

    assert add(2, 3, scale=10) == 50


def test_closures_lambdas_and_local_classes(server):
    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

        def norm2(self):
            return self.x**2 + self.y**2

    offset = 7
    square = lambda v: v * v  # noqa: E731

    @isolated()
    def compute(p):
        return Point(square(p.norm2()) + offset, 0)

    result = compute(Point(1, 2))
    assert isinstance(result, Point)
    assert result.x == 25 + 7


def test_lambda_itself_can_be_isolated(server):
    double = isolated()(lambda x: 2 * x)
    assert double(21) == 42


def test_large_argument_and_result(server):
    payload = os.urandom(1024) * (100 * 1024)  # 100 MiB

    @isolated()
    def echo_len(data):
        return len(data), data[:16], data[-16:]

    assert echo_len(payload) == (len(payload), payload[:16], payload[-16:])


def test_unpicklable_global_is_named(server):
    lock = threading.Lock()

    @isolated()
    def uses_lock():
        return lock.locked()

    with pytest.raises(atoll.SerializationError, match=r"'lock'.*_thread\.lock"):
        uses_lock()


def test_unpicklable_argument_is_named(server):
    @isolated()
    def take(a, b=None):
        return 1

    with pytest.raises(atoll.SerializationError, match=r"argument 1 .*_thread\.lock"):
        take(1, threading.Lock())
    with pytest.raises(atoll.SerializationError, match=r"keyword argument 'b'"):
        take(1, b=threading.Lock())


def test_unpicklable_return_value_is_named(server):
    @isolated()
    def gen():
        return (i for i in range(3))

    with pytest.raises(atoll.SerializationError, match=r"return value of .*gen.*generator"):
        gen()
    # the worker survives a bad return value
    assert isolated()(lambda: "still fine")() == "still fine"


class CustomError(Exception):
    pass


def test_exception_type_and_remote_traceback(server):
    @isolated()
    def fail(x):
        raise CustomError(f"bad input {x}")

    with pytest.raises(CustomError, match="bad input 3") as info:
        fail(3)
    cause = info.value.__cause__
    assert cause is not None
    # The frame names this file and the line of the raise, whatever
    # cloudpickle version pickled the function.
    line = fail.__wrapped__.__code__.co_firstlineno + 2  # the decorator, the def, the raise
    assert f'File "{__file__}", line {line}, in fail' in str(cause)
    assert 'raise CustomError(f"bad input {x}")' in str(cause)
    assert "in fail" in str(cause)
    assert "_runner.py" not in str(cause)


def test_exception_that_cannot_be_unpickled_becomes_remote_error(server):
    @isolated()
    def fail():
        class Unpicklable(Exception):
            def __reduce__(self):
                raise TypeError("no pickling")

        raise Unpicklable("deep trouble")

    with pytest.raises(atoll.RemoteError, match="deep trouble") as info:
        fail()
    err = info.value
    assert "Unpicklable" in err.type_name
    assert err.remote_message == "deep trouble"
    assert 'raise Unpicklable("deep trouble")' in err.remote_traceback


@pytest.mark.parametrize(
    "how, code, sig",
    [
        ("exit", 3, 0),
        ("segfault", -1, signal.SIGSEGV),
        ("kill", -1, signal.SIGKILL),
    ],
)
def test_crashing_worker_raises_and_server_keeps_serving(server, how, code, sig):
    @isolated()
    def crash(how):
        import ctypes
        import os
        import signal

        if how == "exit":
            os._exit(3)
        if how == "segfault":
            ctypes.string_at(0)
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(atoll.WorkerCrashedError) as info:
        crash(how)
    assert info.value.exit_code == code
    assert info.value.signal == sig
    assert server.alive()
    assert isolated()(lambda: 1 + 1)() == 2


def test_unknown_machine_type_fails_before_running(server, tmp_path):
    marker = tmp_path / "ran"

    @isolated(machine_type="XXL")
    def touch():
        open(marker, "w").close()

    with pytest.raises(atoll.MachineTypeError, match=r'unknown machine type "XXL".*XS'):
        touch()
    assert not marker.exists()


def test_output_is_captured_at_the_file_descriptor_level(server, capfd):
    @isolated()
    def shout():
        import os
        import sys

        print("from print")
        print("to stderr", file=sys.stderr)
        os.system("echo from a child process")
        os.write(1, b"raw fd write\n")
        return "done"

    assert shout() == "done"
    out, err = capfd.readouterr()
    assert out.splitlines() == ["from print", "from a child process", "raw fd write"]
    # atoll's own lines (an environment build, on a fresh server) are marked
    assert [line for line in err.splitlines() if not line.startswith("atoll: ")] == ["to stderr"]


def test_output_streams_while_the_function_runs(run_script):
    # The caller's "got" line proves the remote "before" line arrived while
    # the function was still sleeping, not with the result.
    proc = run_script(
        """
import sys, threading, time
from atoll import isolated

@isolated()
def slow():
    print("before", flush=True)
    time.sleep(3)
    print("after", flush=True)
    return "result"

seen = []
class Spy:
    def __init__(self, inner): self.inner, self.buffer = inner, self
    def write(self, data):
        if isinstance(data, bytes) and data.startswith(b"before"):
            seen.append(time.monotonic())
        return self.inner.buffer.write(data) if isinstance(data, bytes) else self.inner.write(data)
    def flush(self): self.inner.flush()
sys.stdout = Spy(sys.__stdout__)
start = time.monotonic()
value = slow()
end = time.monotonic()
print(f"value={value} before_at={seen[0]-start:.2f} end_at={end-start:.2f}", file=sys.stderr)
assert end - seen[0] > 2.0, (seen, end)
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["before", "after"]


def test_server_down_gives_a_clear_error(monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("ATOLL_HOST", f"127.0.0.1:{free_port()}")

    @isolated()
    def f():
        return 1

    started = time.monotonic()
    with pytest.raises(atoll.ServerUnavailableError, match="could not reach the atoll server"):
        f()
    assert time.monotonic() - started < 30


def test_calls_work_in_a_forked_child(run_script):
    # The child must not use the channel it inherited (its connection is
    # the parent's): it opens its own, and the parent's keeps working.
    proc = run_script(
        """
import os
from atoll import _channel, isolated
from atoll.v1 import atoll_pb2_grpc

@isolated()
def pid_and(x):
    import os
    return os.getpid(), x

target = os.environ["ATOLL_HOST"]
parent_stub = _channel.stub(target, atoll_pb2_grpc.FunctionsStub)
print("parent", pid_and(1)[1], flush=True)
child = os.fork()
if child == 0:
    try:
        fresh = _channel.stub(target, atoll_pb2_grpc.FunctionsStub) is not parent_stub
        print("child", pid_and(2)[1], fresh, flush=True)
    finally:
        os._exit(0)
_, status = os.waitpid(child, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert _channel.stub(target, atoll_pb2_grpc.FunctionsStub) is parent_stub
print("parent", pid_and(3)[1], flush=True)
""",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["parent 1", "child 2 True", "parent 3"]
