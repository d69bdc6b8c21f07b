"""isolate's side of `bench.py peers`, run by the Python of isolate's scratch
venv.

    python peer_isolate.py '<json options>'

isolate runs a function in an agent process of a virtualenv it built; its
server (`isolate.server`) keeps agents warm between runs and calls them
directly. This script does what that server does for a cached agent, without
the server (which listens on every interface): it builds the environment
with isolate's virtualenv backend, starts agents with isolate's own launcher
(LocalPythonGRPC.start_process) on 127.0.0.1, and calls the agent's Run with
a cloudpickled function, the "direct agent". It prints one JSON line:
{"agent": {row: value}, "notes": {row: text}}; times in seconds, memory in
MiB.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from isolate.backends.settings import IsolateSettings
from isolate.backends.virtualenv import VirtualPythonEnvironment
from isolate.connections.common import serialize_object
from isolate.connections.grpc import LocalPythonGRPC, definitions
from isolate.connections.grpc.configuration import get_default_options
from isolate.connections.grpc.interface import from_grpc

from measure import latency, median_time, pss_mib, throughput

METHOD = "cloudpickle"


def trivial():
    return 1


def echo(b):
    return b


def sleepy():
    time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """One isolate agent process serving Run calls on 127.0.0.1."""

    def __init__(self, environment: VirtualPythonEnvironment, path: Path):
        # The agent runs the environment's Python with isolate itself (and
        # cloudpickle) inherited from this venv, as isolate's server does.
        connection = LocalPythonGRPC(environment, path, extra_inheritance_paths=[Path(sys.prefix)])
        self.address = f"127.0.0.1:{free_port()}"
        self._process_cm = connection.start_process(self.address)
        self.process = self._process_cm.__enter__()
        self.channel = grpc.secure_channel(self.address, grpc.local_channel_credentials(),
                                           options=get_default_options())
        deadline = time.monotonic() + 60
        while True:
            try:
                grpc.channel_ready_future(self.channel).result(timeout=0.05)
                break
            except grpc.FutureTimeoutError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"isolate agent did not start (exit {self.process.poll()})") from None
        self.stub = definitions.AgentStub(self.channel)

    def run(self, fn, *args):
        call = definitions.FunctionCall(function=definitions.SerializedObject(
            method=METHOD, definition=serialize_object(METHOD, functools.partial(fn, *args) if args else fn),
            was_it_raised=False))
        for part in self.stub.Run(call):
            if part.is_complete:
                result = from_grpc(part.result)
                if part.result.was_it_raised:
                    raise result
                return result
        raise RuntimeError("isolate agent sent no result")

    def close(self) -> None:
        self.channel.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        self._process_cm.__exit__(None, None, None)


def main() -> None:
    opts = json.loads(sys.argv[1])
    # gRPC's 4 MiB default would refuse the 100 MB argument; the agents
    # inherit these (isolate reads ISOLATE_GRPC_CALL_* on both sides).
    for option in ("MAX_SEND_MESSAGE_LENGTH", "MAX_RECEIVE_MESSAGE_LENGTH"):
        os.environ[f"ISOLATE_GRPC_CALL_{option}"] = str(1 << 30)
    tmp = Path(tempfile.mkdtemp(prefix="atoll-bench-isolate-"))
    settings = IsolateSettings(cache_dir=tmp / "cache", serialization_method=METHOD, log_hook=lambda log: None)
    out: dict[str, object] = {}
    notes: dict[str, str] = {}
    agents: list[Agent] = []
    try:
        env = VirtualPythonEnvironment.from_config({"resolver": "uv"}, settings)
        path = env.create()
        agents.append(Agent(env, path))
        out.update(latency(lambda: agents[0].run(trivial), opts["warm"]))

        for n in (8, 2):
            while len(agents) < n:
                agents.append(Agent(env, path))
            out[f"tput{n}"] = throughput([lambda a=a: a.run(trivial) for a in agents[:n]],
                                         opts["seconds"], opts["warmup_s"])
        notes["tput8"] = "isolate: one agent per caller thread (an agent runs one call at a time)"

        payload = os.urandom(opts["payload_bytes"])

        def round_trip() -> None:
            assert len(agents[1].run(echo, payload)) == len(payload)

        round_trip()
        out["mb100_s"] = median_time(round_trip, opts["payload_runs"])
        payload = b""  # the 100 MB freed

        for a in agents:
            a.close()
        agents.clear()

        def fanout() -> float:
            # Eight new agents started at once, each then running its
            # share of the 64 sleeps (isolate has no scheduler of its own);
            # stopping them is not timed.
            started: list[Agent] = []

            def share() -> None:
                a = Agent(env, path)
                started.append(a)
                for _ in range(8):
                    a.run(sleepy)

            threads = [threading.Thread(target=share) for _ in range(8)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            took = time.perf_counter() - t
            for a in started:
                a.close()
            if len(started) != 8:
                raise RuntimeError("an isolate agent did not start")
            return took

        out["fanout"] = statistics.median(fanout() for _ in range(opts["fanout_runs"]))
        notes["fanout"] = "isolate: 8 new agents at once, 8 sleeps each"

        def warm_fanout() -> float:
            # Eight agents started and called once first (not timed).
            warm = [Agent(env, path) for _ in range(8)]
            try:
                for a in warm:
                    a.run(trivial)
                threads = [threading.Thread(target=lambda a=a: [a.run(sleepy) for _ in range(8)]) for a in warm]
                t = time.perf_counter()
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                return time.perf_counter() - t
            finally:
                for a in warm:
                    a.close()

        out["fanout_warm"] = statistics.median(warm_fanout() for _ in range(opts["fanout_runs"]))
        notes["fanout_warm"] = "isolate: 8 started agents, 8 sleeps each"

        def new_agent() -> float:
            t = time.perf_counter()
            a = Agent(env, path)
            try:
                a.run(trivial)
                return time.perf_counter() - t
            finally:
                a.close()

        out["cold"] = statistics.median(new_agent() for _ in range(opts["cold"]))

        idle = Agent(env, path)
        agents.append(idle)
        idle.run(trivial)
        time.sleep(1)
        out["mem"] = pss_mib(idle.process.pid)

        def build(i: int) -> float:
            built = VirtualPythonEnvironment.from_config(
                {"requirements": opts["requirements"], "resolver": "uv"},
                IsolateSettings(cache_dir=tmp / f"build-{i}", log_hook=lambda log: None))
            t = time.perf_counter()
            built.create()
            return time.perf_counter() - t

        build(0)  # uv's cache warm
        out["env"] = statistics.median(build(i) for i in range(1, opts["env_runs"] + 1))
        notes["env"] = "isolate: its virtualenv backend with the uv resolver"
    finally:
        for a in agents:
            a.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"agent": out, "notes": notes}))


if __name__ == "__main__":
    main()
