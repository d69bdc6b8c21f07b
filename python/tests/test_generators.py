"""Generator functions stream their values to the caller."""

from __future__ import annotations

import time

import pytest

from atoll import isolated
from conftest import live_workers, wait_until


def test_values_arrive_before_the_generator_finishes(server):
    @isolated(keep_alive=5)
    def ticks(n):
        import time

        for i in range(n):
            yield i
            time.sleep(1.0)

    start = time.monotonic()
    arrivals = []
    for value in ticks(3):
        arrivals.append((value, time.monotonic() - start))
    assert [v for v, _ in arrivals] == [0, 1, 2]
    total = time.monotonic() - start
    # The first value came about a second before the second one: it was
    # not held back until the generator ended (3 s of sleeping).
    assert arrivals[1][1] - arrivals[0][1] > 0.5
    assert total - arrivals[0][1] > 2.0


def test_exception_mid_stream_comes_after_the_values(server):
    @isolated(keep_alive=5)
    def two_then_raise():
        yield "a"
        yield "b"
        raise RuntimeError("mid-stream")

    got = []
    with pytest.raises(RuntimeError, match="mid-stream"):
        for v in two_then_raise():
            got.append(v)
    assert got == ["a", "b"]


def test_breaking_out_stops_the_workers_generator(server):
    @isolated(keep_alive=30)
    def endless():
        import itertools

        yield from itertools.count()

    for v in endless():
        if v == 5:
            break
    assert wait_until(lambda: not any(w.function_name.endswith("endless") for w in live_workers(server)), timeout=5)


def test_generator_output_is_streamed_too(server, capfd):
    @isolated(keep_alive=5)
    def chatty():
        print("before", flush=True)
        yield 1
        print("after", flush=True)

    assert list(chatty()) == [1]
    assert "before\nafter\n" in capfd.readouterr().out


def test_map_refuses_a_generator_function(server):
    @isolated()
    def gen(x):
        yield x

    with pytest.raises(TypeError, match="generator"):
        gen.map([1])
