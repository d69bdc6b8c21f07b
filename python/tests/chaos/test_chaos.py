"""The chaos suite: real processes killed, stopped and overloaded for real.

Each test runs servers of its own (killing the session's server would hurt
every other test). What it checks is behaviour: nothing outlives a killed
server, nothing a caller saw is lost, callers never hang, no call is lost,
duplicated or answered wrongly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

import atoll
from atoll import isolated
from chaos_helpers import Caller, alive, chaos_server, descendants, wait_until, worker_processes  # noqa: F401
from conftest import atoll_binary, require_sandbox

CHATTY = """
import os, time
from atoll import isolated, sync_dir

@isolated(keep_alive=30)
def chatty():
    with open("/data/chaos-marker", "w") as f:
        f.write("written before the crash")
    for i in range(100000):
        print(f"line {i}", flush=True)
        time.sleep(0.05)

chatty()
"""


def _sandboxed(srv) -> None:
    from atoll.v1 import atoll_pb2 as pb

    status = srv.admin("Status", pb.StatusRequest())
    if status.sandbox == "process":
        reason = f"workers are not sandboxed on this host: {status.sandbox_warning}"
        if os.environ.get("ATOLL_REQUIRE_SANDBOX") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def test_kill_9_of_the_server_mid_call_leaves_nothing_running_and_loses_nothing(chaos_server, tmp_path):
    srv = chaos_server()
    _sandboxed(srv)
    caller = Caller(srv, CHATTY, tmp_path)
    for _ in range(20):
        caller.wait_for("line ")
    procs = worker_processes(srv)
    assert {"agent", "runner"} <= procs.keys(), (procs, descendants(srv.proc.pid))
    # runc runs workers detached: no runtime process stays beside them.
    assert "runtime" not in procs, (procs, descendants(srv.proc.pid))
    below = descendants(srv.proc.pid)
    killed_at = time.monotonic()
    srv.kill9()

    # The user's function and its container die with the server.
    assert wait_until(lambda: not alive(below), timeout=10, interval=0.02), {p: below[p] for p in alive(below)}
    gone_after = time.monotonic() - killed_at
    # The caller is told, naming the server, and does not hang.
    out, err = caller.finish(timeout=30)
    assert caller.proc.returncode != 0
    assert "ServerUnavailableError" in err and srv.address in err, err
    seen = [line for line in out.splitlines() if line.startswith("line ")]
    assert len(seen) >= 20

    # Restarted on the same directory: nothing to kill, everything kept.
    srv.restart()
    log = srv.log()
    assert "killing a worker an earlier server left running" not in log, log
    runs = [r for r in srv.runs() if r.function_name == "__main__.chatty"]
    assert len(runs) == 1 and runs[0].outcome == "interrupted", runs
    logged = srv.logs(runs[0].id)
    missing = [line for line in seen if line + "\n" not in logged]
    # What streams within the last history write (25 ms) may be lost;
    # at 20 lines a second that is a line at most.
    assert len(missing) <= 1, (missing, logged[-500:])

    @isolated()
    def read_marker():
        with open("/data/chaos-marker") as f:
            return f.read()

    os.environ.update(srv.env())
    try:
        assert read_marker() == "written before the crash"  # the key and /data survived
    finally:
        for k in ("ATOLL_HOST", "ATOLL_KEY_ID", "ATOLL_KEY_SECRET"):
            os.environ.pop(k, None)
    envs = subprocess.run(
        [atoll_binary(), "envs", "list", "--data-dir", str(srv.data_dir)], capture_output=True, text=True, check=True,
    ).stdout
    assert runs[0].environment_key[:12] in envs, envs
    print(f"worker processes gone {gone_after * 1000:.0f} ms after kill -9 of the server")


BUILDING = """
from atoll import isolated

@isolated(requirements=["six==1.16.0"], keep_alive=0)
def built():
    import six
    return six.__version__

print("built:", built(), flush=True)
"""


def test_kill_9_of_the_server_mid_build_leaves_a_usable_environment(chaos_server, tmp_path):
    """The server dies while a call's environment builds; restarted on the
    same directory, the environment is there or is built again, and
    works."""
    srv = chaos_server()
    caller = Caller(srv, BUILDING, tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = caller.proc.stderr.readline()
        assert line, "the caller ended before its environment was built"
        if "Creating virtual environment" in line or "Resolved" in line:
            break
    srv.kill9()
    _, err = caller.finish(timeout=30)
    assert "ServerUnavailableError" in err, err
    srv.restart()
    out, err = Caller(srv, BUILDING, tmp_path, "again").finish(timeout=300)
    assert "built: 1.16.0" in out, err


@pytest.mark.parametrize("process", ["agent", "runner"])
def test_killing_each_worker_process_fails_the_call_and_the_server_serves_on(chaos_server, tmp_path, process):
    srv = chaos_server()
    _sandboxed(srv)
    caller = Caller(srv, CHATTY, tmp_path)
    caller.wait_for("line ")
    procs = worker_processes(srv)
    assert process in procs, procs
    below = descendants(srv.proc.pid)
    os.kill(procs[process], signal.SIGKILL)
    out, err = caller.finish(timeout=60)
    assert "WorkerCrashedError" in err, err
    assert wait_until(lambda: not alive(below), timeout=15), {p: below[p] for p in alive(below)}
    assert wait_until(lambda: not srv.workers(), timeout=15)
    again = Caller(srv, "from atoll import isolated\nprint(isolated()(lambda: 'still serving')())\n", tmp_path, "again")
    out, err = again.finish(timeout=120)
    assert "still serving" in out, err
    assert srv.alive()


def test_killed_caller_frees_its_worker(chaos_server, tmp_path):
    srv = chaos_server()
    caller = Caller(srv, CHATTY, tmp_path)
    caller.wait_for("line ")
    assert srv.workers()
    caller.proc.kill()
    caller.proc.wait()
    assert wait_until(lambda: not srv.workers(), timeout=20), srv.workers()
    assert wait_until(lambda: any(r.outcome == "cancelled" for r in srv.runs()), timeout=10)


def test_stopped_server_is_detected_and_named(chaos_server, tmp_path):
    """SIGSTOP: the connection stays up, nothing answers. The caller's
    keepalive (10 s, then 5 s for the answer) gives it up."""
    srv = chaos_server()
    caller = Caller(srv, CHATTY, tmp_path)
    caller.wait_for("line ")
    stopped_at = time.monotonic()
    srv.proc.send_signal(signal.SIGSTOP)
    try:
        out, err = caller.finish(timeout=60)
        waited = time.monotonic() - stopped_at
    finally:
        srv.proc.send_signal(signal.SIGCONT)
    assert "ServerUnavailableError" in err and srv.address in err and "went away during the call" in err, err
    assert waited < 45, waited
    # Resumed, the server serves on and the cut call's worker goes.
    assert wait_until(lambda: not srv.workers(), timeout=30)
    again = Caller(srv, "from atoll import isolated\nprint(isolated()(lambda: 'resumed')())\n", tmp_path, "again")
    assert "resumed" in again.finish(timeout=120)[0]


IDENT = """
from atoll import isolated

@isolated(keep_alive=120)
def ident():
    import builtins, uuid
    if not hasattr(builtins, "_chaos_id"):
        builtins._chaos_id = uuid.uuid4().hex
    return builtins._chaos_id

print(ident(), flush=True)
"""


def test_second_server_on_a_data_dir_fails_at_once_and_touches_nothing(chaos_server, tmp_path):
    from conftest import free_port

    srv = chaos_server()
    out, err = Caller(srv, IDENT, tmp_path, "first").finish(timeout=120)
    first_id = out.strip()
    assert first_id, err
    started = time.monotonic()
    second = subprocess.run(
        [atoll_binary(), "server", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(srv.data_dir)],
        capture_output=True, text=True, timeout=30,
    )
    assert second.returncode != 0
    assert time.monotonic() - started < 10
    assert f"pid {srv.proc.pid}" in second.stderr, second.stderr
    assert "in use by another atoll server" in second.stderr, second.stderr
    assert srv.alive()
    # The first server's warm worker lived through it: the same process
    # answers.
    out, err = Caller(srv, IDENT, tmp_path, "again").finish(timeout=120)
    assert out.strip() == first_id, err


def test_sigterm_lets_calls_finish_then_cuts_them_as_shutting_down(chaos_server, tmp_path):
    srv = chaos_server(extra_args=["--shutdown-grace", "3s"])
    finishing = Caller(srv, """
import time
from atoll import isolated

@isolated()
def short():
    print("started", flush=True)
    time.sleep(1.5)
    return "finished in the grace period"

print(short(), flush=True)
""", tmp_path, "short")
    finishing.wait_for("started")
    srv.proc.send_signal(signal.SIGTERM)
    out, err = finishing.finish(timeout=60)
    assert "finished in the grace period" in out, err
    srv.proc.wait(timeout=30)

    srv = chaos_server(extra_args=["--shutdown-grace", "1s"])
    cut = Caller(srv, """
import time
from atoll import isolated

@isolated()
def long():
    print("started", flush=True)
    time.sleep(120)

long()
""", tmp_path, "long")
    cut.wait_for("started")
    stopping = subprocess.Popen([atoll_binary(), "server", "stop", "--data-dir", str(srv.data_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = cut.finish(timeout=60)
    assert "shutting down" in err and "WorkerCrashedError" not in err, err
    stop_out, stop_err = stopping.communicate(timeout=60)
    assert stopping.returncode == 0 and "Stopped the server" in stop_out, stop_err
    assert not srv.alive()
    assert not descendants(srv.proc.pid)


def _rss_and_fds(pid: int) -> tuple[int, int]:
    rss = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


ECHO_M = """
import sys
from atoll import isolated

@isolated(machine_type="M", keep_alive=0)
def echo(data):
    return data + b"!"

print(len(echo(b"x" * int(sys.argv[1] if len(sys.argv) > 1 else 1))), flush=True)
"""


def test_memory_returns_after_large_payloads(chaos_server, tmp_path):
    srv = chaos_server()
    out, err = Caller(srv, ECHO_M, tmp_path, "small").finish(timeout=300)
    assert out.strip() == "2", err
    assert wait_until(lambda: not srv.workers(), timeout=20)
    before, _ = _rss_and_fds(srv.proc.pid)
    big = Caller(srv, ECHO_M.replace("else 1", f"else {200 << 20}"), tmp_path, "big")
    out, err = big.finish(timeout=300)
    assert out.strip() == str((200 << 20) + 1), err
    assert wait_until(lambda: not srv.workers(), timeout=20)
    settled = wait_until(lambda: _rss_and_fds(srv.proc.pid)[0] < before + (96 << 20), timeout=10)
    after, _ = _rss_and_fds(srv.proc.pid)
    print(f"server RSS: {before >> 20} MiB idle, {after >> 20} MiB after a 200 MB argument and a 200 MB return")
    assert settled, (before >> 20, after >> 20)


LOAD_SECONDS = float(os.environ.get("ATOLL_CHAOS_LOAD_SECONDS", "20"))


def test_bounded_load_loses_duplicates_and_confuses_nothing(chaos_server):
    """8 callers of a trivial function and 2 of a failing one, on a host
    with 8 XS slots (2 CPUs): more callers than slots. Every call made gets
    exactly its own answer."""
    srv = chaos_server()
    os.environ.update(srv.env())
    try:
        @isolated(keep_alive=2)
        def echo(caller, seq):
            return (caller, seq)

        @isolated(keep_alive=2)
        def fail(caller, seq):
            raise ValueError(f"{caller}:{seq}")

        assert echo(-1, -1) == (-1, -1)  # warm the environment
        with pytest.raises(ValueError):
            fail(-1, -1)
        assert wait_until(lambda: not srv.workers(), timeout=20)
        rss0, fds0 = _rss_and_fds(srv.proc.pid)

        made: dict[int, int] = {}
        answers: dict[int, list] = {}
        problems: list[str] = []
        stop_at = time.monotonic() + LOAD_SECONDS

        def call(caller: int, failing: bool) -> None:
            seq = 0
            got = answers.setdefault(caller, [])
            while time.monotonic() < stop_at:
                seq += 1
                made[caller] = seq
                try:
                    if failing:
                        fail(caller, seq)
                        problems.append(f"{caller}:{seq} did not raise")
                    else:
                        got.append(echo(caller, seq))
                except ValueError as e:
                    got.append(str(e))
                except Exception as e:  # noqa: BLE001 - every other outcome is a failure of the test
                    problems.append(f"{caller}:{seq}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=call, args=(i, i >= 8)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=LOAD_SECONDS + 120)
        assert not any(t.is_alive() for t in threads), "a caller hung"
        assert not problems, problems[:10]
        total = 0
        for caller, n in made.items():
            want = [f"{caller}:{s}" if caller >= 8 else (caller, s) for s in range(1, n + 1)]
            assert answers[caller] == want, f"caller {caller}: answers differ from calls made"
            total += n
        assert total > 20, total
        assert wait_until(lambda: not srv.workers(), timeout=30)
        ok = wait_until(lambda: (lambda r, f: r < rss0 + (64 << 20) and f <= fds0 + 4)(*_rss_and_fds(srv.proc.pid)),
                        timeout=15)
        rss1, fds1 = _rss_and_fds(srv.proc.pid)
        print(f"load: {total} calls in {LOAD_SECONDS:.0f} s; server RSS {rss0 >> 20} -> {rss1 >> 20} MiB, fds {fds0} -> {fds1}")
        assert ok, (rss0 >> 20, rss1 >> 20, fds0, fds1)
    finally:
        for k in ("ATOLL_HOST", "ATOLL_KEY_ID", "ATOLL_KEY_SECRET"):
            os.environ.pop(k, None)
