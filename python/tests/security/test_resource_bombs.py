"""Fork and memory bombs: the machine type's limits hold, the bomb's own
call fails (or ends within its limits), and the server keeps serving that
account and another."""

from __future__ import annotations

import pytest

import atoll
from atoll import CloudKeyCredentials, isolated
from conftest import Server, require_sandbox


@pytest.fixture(scope="module")
def sandboxed(server: Server):
    require_sandbox(server)
    return server


@pytest.fixture(scope="module")
def mallory(sandboxed: Server) -> CloudKeyCredentials:
    return CloudKeyCredentials(*sandboxed.create_key("mallory-bombs"))


def still_serving(server: Server, *accounts) -> None:
    assert server.alive()
    for creds in accounts:
        assert isolated(credentials=creds, keep_alive=0)(lambda: "alive")() == "alive"


def test_fork_bomb_hits_the_pids_limit(sandboxed, mallory):
    @isolated(credentials=mallory, machine_type="XS", keep_alive=0)
    def bomb():
        # Every child forks too, as a real bomb does, until the kernel
        # refuses; the parent reports what it saw of the pids cgroup.
        import glob
        import os
        import time

        pid = os.fork()
        if pid == 0:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.01)
            os._exit(0)
        time.sleep(2)
        limits = [open(p).read().strip() for p in glob.glob("/sys/fs/cgroup/pids.max") + glob.glob("/sys/fs/cgroup/pids/pids.max")]
        current = [int(open(p).read()) for p in glob.glob("/sys/fs/cgroup/pids.current") + glob.glob("/sys/fs/cgroup/pids/pids.current")]
        return limits, current

    try:
        limits, current = bomb()
    except atoll.WorkerCrashedError:
        pass  # the limit may starve the worker's own processes: it is torn down
    else:
        assert limits and limits[0] != "max", limits
        assert current and current[0] <= int(limits[0]), (limits, current)
    still_serving(sandboxed, mallory, None)


def test_memory_bomb_is_an_out_of_memory_error(sandboxed, mallory):
    @isolated(credentials=mallory, machine_type="XS", keep_alive=0)
    def hog():
        blocks = []
        while True:
            blocks.append(bytearray(16 * 1024 * 1024))
            for i in range(0, len(blocks[-1]), 4096):
                blocks[-1][i] = 1

    with pytest.raises(atoll.OutOfMemoryError, match="machine type XS allows 256 MiB"):
        hog()
    still_serving(sandboxed, mallory, None)
