"""timeout= and retries= against a real server."""

from __future__ import annotations

import subprocess

import grpc
import pytest

import atoll
from atoll import Retries, isolated
from conftest import atoll_binary, key_metadata, live_workers, wait_until


def runs_of(server, suffix):
    from atoll.v1 import atoll_pb2 as pb
    from atoll.v1 import atoll_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.address) as channel:
        runs = pb_grpc.AdminStub(channel).ListRuns(pb.ListRunsRequest(limit=1000), metadata=key_metadata()).runs
    return [r for r in runs if r.function_name.endswith("." + suffix)]


def run_outcomes(server, suffix):
    return [r.outcome for r in runs_of(server, suffix)]


def test_a_timeout_that_fires(server):
    @isolated(timeout=1, keep_alive=30)
    def stuck():
        import time

        time.sleep(600)

    with pytest.raises(atoll.TimeoutError, match="timeout of 1s") as info:
        stuck()
    assert isinstance(info.value, TimeoutError)  # the builtin, too
    assert isinstance(info.value, atoll.AtollError)
    assert wait_until(lambda: run_outcomes(server, "stuck") == ["timed_out"], timeout=5), run_outcomes(server, "stuck")
    # The worker was killed, not kept warm.
    assert wait_until(lambda: not any(w.function_name.endswith("stuck") for w in live_workers(server)), timeout=5)


def test_a_timeout_that_does_not_fire(server):
    @isolated(timeout=30, keep_alive=5)
    def quick():
        return "done"

    assert quick() == "done"
    assert quick.on(timeout=60)() == "done"
    assert wait_until(lambda: run_outcomes(server, "quick") == ["ok", "ok"], timeout=5)


def test_timeout_beyond_the_servers_maximum_is_refused(server):
    @isolated(timeout=10**9)
    def never():
        return 1

    with pytest.raises(atoll.AtollError, match="maximum"):
        never()


def test_bad_timeout_and_retries_are_refused_when_decorating():
    with pytest.raises(ValueError, match="timeout"):
        isolated(timeout=0)
    with pytest.raises(TypeError, match="retries"):
        isolated(retries="3")
    with pytest.raises(ValueError, match="retries"):
        Retries(count=-1)


def test_a_crash_is_retried_and_succeeds(server, tmp_path):
    marker = "/tmp/atoll-retry-" + tmp_path.name

    @isolated(retries=Retries(count=2, backoff=0.1), keep_alive=5)
    def crash_once(path):
        import os

        # /tmp is the worker's own tmpfs, and it outlives no worker: a file
        # in /data marks the first attempt across workers.
        flag = "/data/" + os.path.basename(path)
        if not os.path.exists(flag):
            open(flag, "w").close()
            os._exit(9)
        os.remove(flag)
        return "second attempt"

    assert crash_once(marker) == "second attempt"
    assert wait_until(lambda: sorted(run_outcomes(server, "crash_once")) == ["crashed", "ok"], timeout=5)
    runs = runs_of(server, "crash_once")
    assert sorted(r.outcome for r in runs) == ["crashed", "ok"], runs
    first = next(r for r in runs if r.attempt == 1)
    second = next(r for r in runs if r.attempt == 2)
    assert second.call_id == first.id and first.outcome == "crashed" and second.outcome == "ok"


def test_a_user_exception_is_not_retried(server):
    @isolated(retries=3, keep_alive=5)
    def always_raises():
        raise ValueError("mine")

    with pytest.raises(ValueError, match="mine"):
        always_raises()
    assert wait_until(lambda: run_outcomes(server, "always_raises") == ["error"], timeout=5)


def test_cancel_by_run_id(server):
    @isolated(keep_alive=30)
    def cancel_me():
        import time

        time.sleep(600)

    f = cancel_me.submit()
    assert wait_until(lambda: any(r.outcome == "" and r.started_unix_ms for r in runs_of(server, "cancel_me")), timeout=60)
    run_id = runs_of(server, "cancel_me")[0].id
    env = {"ATOLL_HOST": server.address}
    out = subprocess.run([atoll_binary(), "cancel", run_id], capture_output=True, text=True, timeout=30,
                         env={**__import__("os").environ, **env})
    assert out.returncode == 0, out.stderr
    with pytest.raises(atoll.CancelledError, match=run_id):
        f.result(timeout=10)
    assert wait_until(lambda: not any(w.function_name.endswith("cancel_me") for w in live_workers(server)), timeout=5)
    assert wait_until(lambda: run_outcomes(server, "cancel_me") == ["cancelled"], timeout=5)
    listed = subprocess.run([atoll_binary(), "runs"], capture_output=True, text=True, timeout=30,
                            env={**__import__("os").environ, **env}).stdout
    assert run_id in listed and "cancelled" in listed
    again = subprocess.run([atoll_binary(), "cancel", run_id], capture_output=True, text=True, timeout=30,
                           env={**__import__("os").environ, **env})
    assert again.returncode != 0 and "in progress" in again.stderr
