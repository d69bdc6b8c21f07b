"""host=local: functions run in environments built on this machine by the
user's host=local supervisor (`atoll local`, started on demand), with real
uv and the real package index, and no server at all (ATOLL_HOST points at a
port where nothing listens)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

import atoll
from atoll import cached, cloud, isolated, local
from atoll import _local
from atoll.v1 import atoll_pb2 as pb
from atoll.v1 import atoll_pb2_grpc as pb_grpc
from conftest import atoll_binary, free_port, wait_until, with_sigint, worker_identity


@pytest.fixture(scope="module", autouse=True)
def local_only(tmp_path_factory: pytest.TempPathFactory):
    """A fresh cache directory, the binary from this checkout, no server and
    no credentials."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        mp.setenv("ATOLL_BIN", atoll_binary())
        mp.setenv("ATOLL_HOST", f"127.0.0.1:{free_port()}")
        for name in ("ATOLL_KEY_ID", "ATOLL_KEY_SECRET"):
            mp.delenv(name, raising=False)
        yield cache
        stop_supervisor(cache)


def stop_supervisor(cache: Path) -> None:
    subprocess.run([atoll_binary(), "local", "stop", "--cache-dir", str(cache / "atoll")], check=True, timeout=60)


def warm_workers(fn) -> int:
    """How many idle workers the supervisor keeps warm for fn, for this
    process (its Admin service lists the caller's own workers)."""
    with grpc.insecure_channel(_local.target()) as channel:
        workers = pb_grpc.AdminStub(channel).ListWorkers(pb.ListWorkersRequest(), timeout=10).workers
    return sum(1 for w in workers if w.function_name == fn.name and w.idle)


def pid_gone(pid: int) -> bool:
    """Whether the process has exited (a zombie left to init counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_requirements_are_installed_only_in_the_local_environment(local_only, capfd):
    @isolated(requirements=["pyjokes"], host=local)
    def my_function_local2():
        import sys

        import pyjokes

        return pyjokes.get_joke(), sys.prefix

    assert importlib.util.find_spec("pyjokes") is None
    joke, prefix = my_function_local2()
    assert isinstance(joke, str) and joke
    assert Path(prefix).is_relative_to(local_only / "atoll" / "envs")
    assert importlib.util.find_spec("pyjokes") is None
    _, err = capfd.readouterr()
    assert "atoll: " in err and "+ pyjokes" in err  # the build's output, as system lines


def test_on_local_runs_without_any_server():
    def my_function(x):
        import os

        return x * 2, os.environ.get("VIRTUAL_ENV", "")

    remote = isolated()(my_function)
    my_function_local = remote.on(local)
    assert remote.options.host is cloud  # unchanged
    value, venv = my_function_local(21)
    assert value == 42
    assert "/atoll/envs/" in venv


def test_on_switches_hosts_back_and_forth():
    @isolated(requirements=["pyjokes"], keep_alive=3)
    def my_function():
        return 1

    my_function_local = my_function.on(local)
    my_function_cloud = my_function_local.on(cloud, machine_type="M")
    assert my_function_local.options.host is local
    assert my_function_local.options.requirements == ("pyjokes",)
    assert my_function_cloud.options.host is cloud
    assert my_function_cloud.options.machine_type == "M"
    assert my_function_cloud.options.requirements == ("pyjokes",)
    assert my_function_cloud.options.keep_alive == 3
    assert isolated(host=local)(my_function.func).options.host is local


def test_warm_worker_is_reused_and_keeps_globals():
    @isolated(host=local, keep_alive=30)
    def counter():
        global _calls
        try:
            _calls += 1
        except NameError:
            _calls = 1
        return worker_identity(), _calls

    first, n1 = counter()
    second, n2 = counter()
    assert first == second
    assert (n1, n2) == (1, 2)
    assert warm_workers(counter) == 1


def test_worker_is_gone_after_keep_alive():
    @isolated(host=local, keep_alive=1)
    def ident():
        import os

        return worker_identity(), os.getpid()

    first, pid = ident()
    assert warm_workers(ident) == 1
    assert wait_until(lambda: warm_workers(ident) == 0, timeout=10)
    assert wait_until(lambda: pid_gone(pid), timeout=5)
    assert ident()[0] != first


def test_each_call_restarts_the_timer():
    @isolated(host=local, keep_alive=2)
    def ident():
        return worker_identity()

    first = ident()
    for _ in range(3):  # 3.6 s in all, well past one keep_alive
        time.sleep(1.2)
        assert ident() == first
    assert wait_until(lambda: warm_workers(ident) == 0, timeout=10)


def test_keep_alive_zero_tears_down_at_once():
    @isolated(host=local, keep_alive=0)
    def ident():
        import os

        return worker_identity(), os.getpid()

    first, pid = ident()
    assert warm_workers(ident) == 0
    assert wait_until(lambda: pid_gone(pid), timeout=5)
    assert ident()[0] != first


def test_concurrent_calls_get_separate_workers():
    @isolated(host=local, keep_alive=5)
    def slow_ident(_):
        import time

        time.sleep(1.5)
        return worker_identity()

    with ThreadPoolExecutor(3) as pool:
        idents = list(pool.map(slow_ident, range(3)))
    assert len(set(idents)) == 3
    assert warm_workers(slow_ident) == 3


@cached
def slow_square(x):
    import builtins

    builtins._atoll_square_runs = getattr(builtins, "_atoll_square_runs", 0) + 1
    return x * x


def test_cached_results_per_argument_in_a_warm_worker():
    @isolated(host=local, keep_alive=30)
    def use_cache(x):
        import builtins

        value = slow_square(x)
        return value, builtins._atoll_square_runs

    assert use_cache(3) == (9, 1)
    assert use_cache(3) == (9, 1)  # cached: not run again
    assert use_cache(4) == (16, 2)  # another argument is another entry
    assert use_cache(4) == (16, 2)


def test_new_worker_starts_with_an_empty_cache():
    @isolated(host=local, keep_alive=0)
    def use_cache(x):
        import builtins

        slow_square(x)
        return builtins._atoll_square_runs

    assert use_cache(5) == 1
    assert use_cache(5) == 1  # a fresh worker ran it again


class CustomError(Exception):
    pass


def test_exception_type_and_remote_traceback():
    @isolated(host=local, keep_alive=5)
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
    assert warm_workers(fail) == 1  # the function's own exception leaves the worker warm


def test_unpicklable_return_value_keeps_the_worker():
    @isolated(host=local, keep_alive=5)
    def gen(make):
        return (i for i in range(3)) if make else worker_identity()

    first = gen(False)
    with pytest.raises(atoll.SerializationError, match=r"return value of .*gen.*generator"):
        gen(True)
    assert gen(False) == first


@pytest.mark.parametrize(
    "how, code, sig",
    [
        ("exit", 3, 0),
        ("segfault", -1, signal.SIGSEGV),
    ],
)
def test_crashing_worker_raises_worker_crashed_error(how, code, sig):
    @isolated(host=local, keep_alive=5)
    def crash(how):
        import ctypes
        import os

        if how == "exit":
            os._exit(3)
        ctypes.string_at(0)

    with pytest.raises(atoll.WorkerCrashedError) as info:
        crash(how)
    assert info.value.exit_code == code
    assert info.value.signal == sig
    assert warm_workers(crash) == 0
    assert isolated(host=local)(lambda: 1 + 1)() == 2


def test_output_is_captured_at_the_file_descriptor_level(capfd):
    @isolated(host=local)
    def shout():
        import os
        import sys

        print("from print")
        print("to stderr", file=sys.stderr)
        os.system("echo from a child process")
        os.write(1, b"raw fd write\n")
        return "done"

    isolated(host=local, keep_alive=0)(lambda: None)()  # the environment's build output goes first
    capfd.readouterr()
    assert shout() == "done"
    out, err = capfd.readouterr()
    assert out.splitlines() == ["from print", "from a child process", "raw fd write"]
    assert err.splitlines() == ["to stderr"]


def test_output_streams_while_the_function_runs(tmp_path):
    # The caller's timestamp proves the "before" line arrived while the
    # function was still sleeping, not with the result.
    script = tmp_path / "script.py"
    script.write_text(
        """
import sys, time
from atoll import isolated, local

@isolated(host=local)
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
value = slow()
end = time.monotonic()
assert value == "result"
assert end - seen[0] > 2.0, (seen, end)
"""
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["before", "after"]


def test_workers_stop_when_the_caller_exits(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        """
import os
from atoll import isolated, local

@isolated(host=local, keep_alive=300)
def pid():
    import os
    return os.getpid()

print(pid())
"""
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    runner = int(proc.stdout.strip())
    assert wait_until(lambda: pid_gone(runner), timeout=5)


def test_interrupted_call_stops_the_worker_and_what_it_started(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        """
from atoll import isolated, local

@isolated(host=local, keep_alive=300)
def hang():
    import subprocess, time
    child = subprocess.Popen(["sleep", "300"])
    print(child.pid, flush=True)
    time.sleep(300)

try:
    hang()
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""
    )
    proc = subprocess.Popen(
        with_sigint([sys.executable, str(script)]), stdout=subprocess.PIPE, text=True,
    )
    try:
        child = int(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.read().strip() == "interrupted"
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert wait_until(lambda: pid_gone(child), timeout=5)


def test_broken_requirement_raises_environment_build_error_with_uv_text():
    @isolated(requirements=["no-such-package-xyz-atoll"], host=local)
    def f():
        return 1

    for _ in range(2):  # a failed build is not remembered: the second call tries again
        with pytest.raises(atoll.EnvironmentBuildError, match="no-such-package-xyz-atoll") as info:
            f()
        assert "not found in the package registry" in str(info.value)


def test_missing_binary_is_a_clear_error(local_only, monkeypatch, tmp_path):
    import atoll._binary

    stop_supervisor(local_only)  # a running supervisor needs no binary to serve
    monkeypatch.delenv("ATOLL_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(atoll._binary, "_CHECKOUT_BINARY", tmp_path / "no-such-checkout" / "atoll")

    @isolated(host=local)
    def f():
        return 1

    with pytest.raises(atoll.AtollError, match=r"ATOLL_BIN.*PATH"):
        f()


def test_environments_live_under_the_user_cache_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _local.env_root() == str(tmp_path / "atoll")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _local.env_root() == str(tmp_path / ".cache" / "atoll")
