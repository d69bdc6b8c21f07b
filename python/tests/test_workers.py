"""Warm workers: keep_alive reuse, expiry and timer restart, keep_alive=0,
concurrency, .on() and @cached, against a real atoll server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from atoll import cached, isolated
from conftest import live_workers, wait_until, with_sigint, worker_identity


def workers_of(server, fn) -> list:
    return [w for w in live_workers(server) if w.function_name == fn.name]


def test_warm_worker_is_reused_and_keeps_globals(server):
    @isolated(keep_alive=30)
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
    assert len(workers_of(server, counter)) == 1


def test_worker_is_gone_after_keep_alive(server):
    @isolated(keep_alive=1)
    def ident():
        return worker_identity()

    first = ident()
    assert len(workers_of(server, ident)) == 1
    assert wait_until(lambda: not workers_of(server, ident), timeout=10)
    assert ident() != first


def test_each_call_restarts_the_timer(server):
    @isolated(keep_alive=2)
    def ident():
        return worker_identity()

    first = ident()
    for _ in range(3):  # 3.6 s in all, well past one keep_alive
        time.sleep(1.2)
        assert ident() == first
    assert wait_until(lambda: not workers_of(server, ident), timeout=10)


def test_keep_alive_zero_tears_down_at_once(server):
    @isolated(keep_alive=0)
    def ident():
        return worker_identity()

    first = ident()
    assert wait_until(lambda: not workers_of(server, ident), timeout=5)
    assert ident() != first


def test_concurrent_calls_get_separate_workers(server):
    @isolated(keep_alive=5)
    def slow_ident(_):
        import time

        time.sleep(1.5)
        return worker_identity()

    with ThreadPoolExecutor(3) as pool:
        idents = list(pool.map(slow_ident, range(3)))
    assert len(set(idents)) == 3


def test_on_returns_an_independent_function(server):
    @isolated(keep_alive=5, machine_type="XS")
    def ident():
        return worker_identity()

    other = ident.on(machine_type="S", keep_alive=1)
    assert ident.options.machine_type == "XS" and ident.options.keep_alive == 5
    assert other.options.machine_type == "S" and other.options.keep_alive == 1
    assert ident() != other()
    types = {w.machine_type for w in live_workers(server) if w.function_name == ident.name}
    assert types == {"XS", "S"}


@cached
def slow_square(x):
    import builtins

    builtins._atoll_square_runs = getattr(builtins, "_atoll_square_runs", 0) + 1
    return x * x


def test_cached_results_per_argument_in_a_warm_worker(server):
    @isolated(keep_alive=30)
    def use_cache(x):
        import builtins

        value = slow_square(x)
        return value, builtins._atoll_square_runs

    assert use_cache(3) == (9, 1)
    assert use_cache(3) == (9, 1)  # cached: not run again
    assert use_cache(4) == (16, 2)  # another argument is another entry
    assert use_cache(4) == (16, 2)


def test_new_worker_starts_with_an_empty_cache(server):
    @isolated(keep_alive=0)
    def use_cache(x):
        import builtins

        slow_square(x)
        return builtins._atoll_square_runs

    assert use_cache(5) == 1
    assert use_cache(5) == 1  # a fresh worker ran it again


def test_cached_reference_example_timing(server):
    @cached
    def my_cached_function():
        time.sleep(2)
        return "Hello, World!"

    @isolated(keep_alive=10)
    def my_isolated_function():
        result = my_cached_function()
        return f"The result is: {result}"

    t0 = time.monotonic()
    assert my_isolated_function() == "The result is: Hello, World!"
    t1 = time.monotonic()
    assert my_isolated_function() == "The result is: Hello, World!"
    t2 = time.monotonic()
    assert t1 - t0 >= 2
    assert t2 - t1 < 1.5


@pytest.mark.parametrize("keep_alive", [0, 0.5])
def test_failed_call_does_not_leak_workers(server, keep_alive):
    @isolated(keep_alive=keep_alive)
    def fail():
        raise ValueError("nope")

    with pytest.raises(ValueError):
        fail()
    assert wait_until(lambda: not workers_of(server, fail), timeout=10)


def test_interrupted_caller_tears_down_its_worker(server, tmp_path):
    """Ctrl-C in the caller cancels the call: the worker (which cannot be
    interrupted safely mid-call) is torn down and the run is recorded as
    cancelled."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import key_metadata

    script = tmp_path / "interrupted.py"
    script.write_text(
        "import time\n"
        "from atoll import isolated\n"
        "@isolated(keep_alive=30)\n"
        "def stuck():\n"
        "    print('started', flush=True)\n"
        "    time.sleep(120)\n"
        "stuck()\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Ctrl-C as a terminal delivers it: a runner started in the background
    # by a shell without job control passes SIGINT on ignored, and Python
    # then never raises KeyboardInterrupt.
    proc = subprocess.Popen(
        with_sigint([sys.executable, str(script)]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout.readline().strip() == "started"
        assert [w for w in live_workers(server) if w.function_name == "__main__.stuck"]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in err
    assert wait_until(lambda: not [w for w in live_workers(server) if w.function_name == "__main__.stuck"], timeout=15)

    import grpc

    from atoll.v1 import atoll_pb2 as pb
    from atoll.v1 import atoll_pb2_grpc as pb_grpc

    def outcome():
        with grpc.insecure_channel(server.address) as ch:
            runs = pb_grpc.AdminStub(ch).ListRuns(pb.ListRunsRequest(limit=20), metadata=key_metadata()).runs
        return next((r.outcome for r in runs if r.function_name == "__main__.stuck"), None)

    assert wait_until(lambda: outcome() == "cancelled", timeout=10), outcome()
