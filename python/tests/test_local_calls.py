"""map, submit, call_async, generators, timeouts and cancelling with
host=local: the same behaviour as on a server, through the user's
host=local supervisor."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

import atoll
from atoll import _local, isolated, local
from atoll.v1 import atoll_pb2 as pb
from atoll.v1 import atoll_pb2_grpc as pb_grpc
from conftest import wait_until, worker_identity
from test_local import local_only  # noqa: F401 - the module's fixture: no server, a fresh cache


def local_workers(suffix):
    with grpc.insecure_channel(_local.target()) as channel:
        workers = pb_grpc.AdminStub(channel).ListWorkers(pb.ListWorkersRequest(), timeout=10).workers
    return [w for w in workers if w.function_name.endswith(suffix)]


def test_local_map_in_order_over_reused_workers():
    @isolated(host=local, keep_alive=5)
    def cube(x):
        return x**3, worker_identity()

    got = list(cube.map(range(200), max_concurrency=2))
    assert [g[0] for g in got] == [x**3 for x in range(200)]
    assert 1 <= len({g[1] for g in got}) <= 2


def test_local_map_failure_names_the_item():
    @isolated(host=local, keep_alive=5)
    def bad_at_three(x):
        if x == 3:
            raise ValueError("three")
        return x

    assert list(bad_at_three.map(range(5), return_exceptions=True))[3].args == ("three",)
    with pytest.raises(ValueError) as info:
        list(bad_at_three.map(range(5)))
    assert "item 3 of the map" in "".join(getattr(info.value, "__notes__", []))


def test_local_generator_submit_and_async():
    @isolated(host=local, keep_alive=5)
    def count(n):
        yield from range(n)

    assert list(count(4)) == [0, 1, 2, 3]

    @isolated(host=local, keep_alive=5)
    def double(x):
        return 2 * x

    assert double.submit(21).result(timeout=120) == 42

    async def main():
        return await asyncio.gather(double.call_async(1), double.call_async(2))

    assert asyncio.run(main()) == [2, 4]


def test_local_timeout_and_cancel():
    @isolated(host=local, timeout=1, keep_alive=5)
    def stuck_local():
        import time

        time.sleep(600)

    with pytest.raises(atoll.TimeoutError, match="timeout of 1s"):
        stuck_local()

    @isolated(host=local, keep_alive=30)
    def cancel_local():
        import time

        time.sleep(600)

    f = cancel_local.submit()
    assert wait_until(lambda: any(not w.idle for w in local_workers("cancel_local")), timeout=60)
    start = time.monotonic()
    assert f.cancel()
    assert wait_until(lambda: not local_workers("cancel_local"), timeout=5, interval=0.02)
    assert time.monotonic() - start < 3


def test_local_secrets_are_a_clear_error():
    @isolated(host=local, secrets=["db"])
    def wants_secret():
        return 1

    with pytest.raises(atoll.SecretNotFoundError, match="keeps no secrets"):
        wants_secret()
