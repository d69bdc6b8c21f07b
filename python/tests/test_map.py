"""f.map and f.starmap against a real server: order, fan-out over warm
workers, failures, and leaving early."""

from __future__ import annotations

import time

import pytest

import atoll
from atoll import isolated
from conftest import live_workers, wait_until, with_sigint, worker_identity


def test_map_1000_items_in_order_on_at_most_the_allowed_workers(server):
    @isolated(keep_alive=5)
    def square(x):
        return x * x, worker_identity()

    results = list(square.map(range(1000), max_concurrency=3))
    assert [r[0] for r in results] == [x * x for x in range(1000)]
    workers = {r[1] for r in results}
    assert 1 <= len(workers) <= 3, workers
    # Each worker served many items: workers are reused, not one per item.
    assert len(results) / len(workers) >= 100


def test_map_streams_results_before_the_last_item(server):
    @isolated(keep_alive=5)
    def slow_at_end(x):
        import time

        if x == 9:
            time.sleep(12)
        return x

    start = time.monotonic()
    it = slow_at_end.map(range(10), max_concurrency=2)
    assert next(it) == 0
    # The first result does not wait for item 9's sleep.
    assert time.monotonic() - start < 10
    assert list(it) == list(range(1, 10))


def test_map_zips_iterables_and_starmap(server):
    @isolated(keep_alive=5)
    def add(a, b):
        return a + b

    assert list(add.map([1, 2, 3], [10, 20, 30])) == [11, 22, 33]
    assert list(add.starmap([(1, 2), (3, 4)])) == [3, 7]


def test_map_unordered_yields_every_result(server):
    @isolated(keep_alive=5)
    def ident(x):
        import time

        time.sleep(0.3 if x == 0 else 0)
        return x

    got = list(ident.map(range(20), ordered=False, max_concurrency=2))
    assert sorted(got) == list(range(20))
    assert got[0] != 0  # item 0 is slow: completion order puts it later


def test_map_return_exceptions(server):
    @isolated(keep_alive=5)
    def fragile(x):
        if x % 3 == 1:
            raise ValueError(f"bad {x}")
        return x

    got = list(fragile.map(range(7), return_exceptions=True))
    for i, r in enumerate(got):
        if i % 3 == 1:
            assert isinstance(r, ValueError) and str(r) == f"bad {i}"
        else:
            assert r == i


def test_map_failure_names_the_item_and_cancels_the_rest(server):
    @isolated(keep_alive=5)
    def fails_at_five(x):
        import time

        if x == 5:
            raise KeyError("five")
        time.sleep(0.05)
        return x

    seen = []
    with pytest.raises(KeyError) as info:
        for r in fails_at_five.map(range(10_000), max_concurrency=2):
            seen.append(r)
    assert seen == [0, 1, 2, 3, 4]
    assert "item 5 of the map" in "".join(getattr(info.value, "__notes__", []))
    # The rest were cancelled: far fewer than 10,000 items ran.
    runs = _runs(server, "fails_at_five")
    assert len(runs) < 1000


def test_map_atoll_error_names_the_item(server):
    @isolated(keep_alive=5)
    def crash_at_two(x):
        import os

        if x == 2:
            os._exit(3)
        return x

    with pytest.raises(atoll.WorkerCrashedError, match="item 2 of the map"):
        list(crash_at_two.map(range(4), max_concurrency=1))


def test_unpicklable_item_fails_in_its_place(server):
    import threading

    @isolated(keep_alive=5)
    def kind(x):
        return type(x).__name__

    got = list(kind.map([1, threading.Lock(), "s"], return_exceptions=True))
    assert got[0] == "int" and got[2] == "str"
    assert isinstance(got[1], atoll.SerializationError)


def test_breaking_out_of_a_map_frees_the_workers(server):
    @isolated(keep_alive=0)
    def sleepy(x):
        import time

        if x > 0:
            time.sleep(60)
        return x

    def busy():
        return [w for w in live_workers(server) if w.function_name.endswith("sleepy") and not w.idle]

    for r in sleepy.map(range(100), max_concurrency=3):
        assert r == 0
        # The other workers are busy with items that sleep.
        assert wait_until(lambda: len(busy()) >= 2, timeout=60), live_workers(server)
        break
    assert wait_until(lambda: not any(w.function_name.endswith("sleepy") for w in live_workers(server)), timeout=5), live_workers(server)


def _runs(server, suffix):
    from atoll.v1 import atoll_pb2 as pb
    from atoll.v1 import atoll_pb2_grpc as pb_grpc
    import grpc

    from conftest import key_metadata

    time.sleep(0.2)  # history is written in batches
    with grpc.insecure_channel(server.address) as channel:
        runs = pb_grpc.AdminStub(channel).ListRuns(pb.ListRunsRequest(limit=1000), metadata=key_metadata()).runs
    return [r for r in runs if r.function_name.endswith(suffix)]


def test_lines_of_items_running_at_once_reach_the_caller_whole(server, capfd):
    @isolated(keep_alive=30)
    def chatty(tag):
        import sys

        for i in range(2000):
            print(f"{tag}-{i}")
        return sys.stdout.line_buffering

    # Twice: the second map's two items start at once on the warm workers
    # of the first, and print at the same time.
    for _ in range(2):
        assert list(chatty.map(["a", "b"], max_concurrency=2)) == [True, True]
    lines = [line for line in capfd.readouterr().out.splitlines() if line]
    assert sorted(lines) == sorted([f"{tag}-{i}" for tag in "ab" for i in range(2000)] * 2)


def test_ctrl_c_in_a_map_cancels_its_items(server, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "interrupted_map.py"
    script.write_text(
        "import time\n"
        "from atoll import isolated\n"
        "@isolated(keep_alive=30)\n"
        "def stuck_item(x):\n"
        "    print('started', flush=True)\n"
        "    time.sleep(120)\n"
        "list(stuck_item.map(range(10), max_concurrency=2))\n"
    )
    # Ctrl-C as a terminal delivers it (see test_workers' interrupted caller).
    proc = subprocess.Popen(
        with_sigint([sys.executable, str(script)]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )

    def items_running():
        return [w for w in live_workers(server) if w.function_name == "__main__.stuck_item" and not w.idle]

    try:
        # Both items run the function (each printed), not merely hold a worker.
        assert [proc.stdout.readline().strip() for _ in range(2)] == ["started"] * 2
        assert wait_until(lambda: len(items_running()) == 2, timeout=60)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in err
    assert wait_until(lambda: not [w for w in live_workers(server) if w.function_name == "__main__.stuck_item"], timeout=5)
    assert wait_until(lambda: sorted(r.outcome for r in _runs(server, "__main__.stuck_item")) == ["cancelled"] * 2, timeout=5), [(r.outcome, r) for r in _runs(server, "__main__.stuck_item")]


def test_map_streams_an_endless_input_with_a_few_threads(server):
    import itertools
    import threading

    @isolated(keep_alive=5)
    def half(x):
        return x // 2

    before = threading.active_count()
    threads = 0
    for r in half.map(itertools.count(), max_concurrency=2):
        threads = max(threads, threading.active_count())
        if r >= 500:
            break
    # An endless input cannot have been read whole, and no thread was
    # started per item.
    assert threads - before <= 4, (before, threads)
