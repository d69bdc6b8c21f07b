"""f.submit (concurrent.futures) and f.call_async (asyncio) against a real
server, and cancelling a call that runs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import pytest

from atoll import isolated
from conftest import live_workers, wait_until


def test_submit_and_as_completed(server):
    @isolated(keep_alive=5)
    def delayed(x, delay):
        import time

        time.sleep(delay)
        return x

    futures = [delayed.submit(i, 0.1 * (4 - i)) for i in range(4)]
    assert isinstance(futures[0], concurrent.futures.Future)
    got = [f.result(timeout=120) for f in concurrent.futures.as_completed(futures, timeout=120)]
    assert sorted(got) == [0, 1, 2, 3]
    done, not_done = concurrent.futures.wait(futures, timeout=1)
    assert len(done) == 4 and not not_done


def test_submit_result_timeout_and_exception(server):
    @isolated(keep_alive=5)
    def boom(delay):
        import time

        time.sleep(delay)
        raise ValueError("boom")

    f = boom.submit(2)
    with pytest.raises(concurrent.futures.TimeoutError):
        f.result(timeout=0.01)
    with pytest.raises(ValueError, match="boom"):
        f.result(timeout=120)
    assert isinstance(f.exception(), ValueError)


def test_cancel_of_a_running_call_frees_its_worker_and_records_it(server):
    from test_timeouts import run_outcomes

    @isolated(keep_alive=30)
    def forever():
        import time

        time.sleep(600)

    f = forever.submit()

    def busy():
        return [w for w in live_workers(server) if w.function_name.endswith("forever") and not w.idle]

    assert wait_until(lambda: len(busy()) == 1, timeout=60)
    start = time.monotonic()
    assert f.cancel()
    assert wait_until(lambda: not any(w.function_name.endswith("forever") for w in live_workers(server)), timeout=5, interval=0.02)
    freed = time.monotonic() - start
    assert freed < 3, f"the worker took {freed:.2f}s to go"
    assert f.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        f.result(timeout=5)
    assert wait_until(lambda: run_outcomes(server, "forever") == ["cancelled"], timeout=5), run_outcomes(server, "forever")


def test_two_concurrent_awaits_take_about_one_call(server):
    @isolated(keep_alive=30)
    def nap(x):
        import time

        time.sleep(1.5)
        return x

    # Warm two workers, so that the measurement is of calls, not starts.
    assert sorted(f.result() for f in [nap.submit(0), nap.submit(1)]) == [0, 1]

    async def main():
        start = time.monotonic()
        assert await nap.call_async(1) == 1
        single = time.monotonic() - start
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        t = asyncio.create_task(ticker())
        start = time.monotonic()
        got = await asyncio.gather(nap.call_async(2), nap.call_async(3))
        both = time.monotonic() - start
        t.cancel()
        return single, both, got, ticks

    single, both, got, ticks = asyncio.run(main())
    assert got == [2, 3]
    assert both < 1.8 * single, (single, both)
    assert ticks >= 5  # the event loop ran while the calls did


def test_cancelling_an_awaiting_task_cancels_the_call(server):
    from test_timeouts import run_outcomes

    @isolated(keep_alive=30)
    def long_nap():
        import time

        time.sleep(600)

    async def main():
        task = asyncio.ensure_future(long_nap.call_async())
        await asyncio.sleep(0)
        for _ in range(1200):
            if any(w.function_name.endswith("long_nap") and not w.idle for w in live_workers(server)):
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert wait_until(lambda: not any(w.function_name.endswith("long_nap") for w in live_workers(server)), timeout=5)
    assert wait_until(lambda: run_outcomes(server, "long_nap") == ["cancelled"], timeout=5)
