"""Helpers of the chaos suite (the fixture is chaos_server): servers of a test's own (so that killing one
hurts no other test), their process trees, and callers in processes of
their own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from conftest import Server, wait_until, with_sigint


class ChaosServer(Server):
    """A server of one test, with a key of account "default"."""

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None):
        super().__init__(data_dir, extra_args)
        self.key_id, self.secret = self.create_key()

    def env(self) -> dict[str, str]:
        """The environment of a caller of this server."""
        return {
            **os.environ, "ATOLL_HOST": self.address, "ATOLL_KEY_ID": self.key_id,
            "ATOLL_KEY_SECRET": self.secret, "PYTHONUNBUFFERED": "1",
        }

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-atoll-key-id", self.key_id), ("x-atoll-key-secret", self.secret))

    def admin(self, method: str, request):
        from atoll.v1 import atoll_pb2_grpc as pb_grpc

        with grpc.insecure_channel(self.address) as channel:
            return getattr(pb_grpc.AdminStub(channel), method)(request, metadata=self.metadata(), timeout=10)

    def workers(self) -> list:
        from atoll.v1 import atoll_pb2 as pb

        return list(self.admin("ListWorkers", pb.ListWorkersRequest()).workers)

    def runs(self) -> list:
        from atoll.v1 import atoll_pb2 as pb

        return list(self.admin("ListRuns", pb.ListRunsRequest(limit=100)).runs)

    def logs(self, run_id: str) -> str:
        from atoll.v1 import atoll_pb2 as pb

        lines = self.admin("GetRunLogs", pb.GetRunLogsRequest(run_id=run_id)).lines
        return b"".join(line.data for line in lines).decode(errors="replace")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._log.close()

    def restart(self) -> ChaosServer:
        return self.start()


@pytest.fixture
def chaos_server(tmp_path: Path):
    """Starts servers of the test's own; stops every one at the end."""
    started: list[ChaosServer] = []

    def start(data_dir: Path | None = None, extra_args: list[str] | None = None) -> ChaosServer:
        srv = ChaosServer(data_dir or tmp_path / f"data{len(started)}", extra_args)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()
    for srv in started:
        assert "panic:" not in srv.log(), srv.log()


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process on this host."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # The state and ppid follow the command name, in parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":
            continue
        table[int(entry)] = (int(fields[1]), cmdline.strip())
    return table


def descendants(pid: int) -> dict[int, str]:
    """The live processes below pid: pid -> command line."""
    table = process_table()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, cmd) in table.items():
            if ppid == parent and child not in found:
                found[child] = cmd
                frontier.append(child)
    return found


def alive(pids) -> list[int]:
    table = process_table()
    return [p for p in pids if p in table]


def worker_processes(srv: ChaosServer) -> dict[str, int]:
    """The host pids of the one worker's processes: the agent (atoll
    worker) and the Python runner, and an OCI runtime running the worker in
    its foreground if there is one (runc runs workers detached)."""
    assert srv.proc is not None
    procs = descendants(srv.proc.pid)
    found: dict[str, int] = {}
    for pid, cmd in procs.items():
        if " worker " in f" {cmd} " and "atoll" in cmd.split(" ")[0]:
            found["agent"] = pid
        elif "atoll_runner" in cmd or "_runner.py" in cmd or cmd.startswith(sys.executable.split("/")[-1]):
            found.setdefault("runner", pid)
        elif cmd.split(" ")[0].rsplit("/", 1)[-1] in ("runc", "crun", "runsc"):
            found.setdefault("runtime", pid)
    # The runner is the agent's child.
    if "agent" in found:
        for pid in descendants(found["agent"]):
            found["runner"] = pid
            break
    return found


class Caller:
    """A script calling the server from a process of its own, its output
    read line by line."""

    def __init__(self, srv: ChaosServer, source: str, tmp_path: Path, name: str = "caller"):
        script = tmp_path / f"{name}.py"
        script.write_text(source)
        self.proc = subprocess.Popen(
            with_sigint([sys.executable, str(script)]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=srv.env(),
        )
        self.lines: list[str] = []

    def readline(self) -> str:
        line = self.proc.stdout.readline()
        self.lines.append(line)
        return line

    def wait_for(self, prefix: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.readline()
            if not line:
                raise AssertionError(f"caller ended before {prefix!r}: {self.proc.stderr.read()}")
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} within {timeout}s")

    def finish(self, timeout: float) -> tuple[str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            self.proc.kill()
        self.lines.extend(out.splitlines(keepends=True))
        return "".join(self.lines), err


__all__ = ["Caller", "ChaosServer", "alive", "chaos_server", "descendants", "wait_until", "worker_processes"]
