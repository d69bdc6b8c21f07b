"""Ray's side of `bench.py peers`, run by the Python of Ray's scratch venv.

    python peer_ray.py '<json options>'

Starts a local Ray cluster on loopback only (node address 127.0.0.1, no
dashboard, usage stats off: the benchmark sets RAY_USAGE_STATS_ENABLED=0 and
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which keeps Ray from looking up a
routable address) with 8 CPUs, measures the rows of the peers table for
actors and for tasks, and prints them as one JSON line: {"actor": {row:
value}, "task": {...}, "notes": {row: text}}; times in seconds, memory in
MiB, a string where a row could not be measured.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import ray

from measure import latency, median_time, pss_mib, throughput

opts = json.loads(sys.argv[1])
temp_dir = tempfile.mkdtemp(prefix="atoll-bench-ray-")
try:
    ray.init(num_cpus=8, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             _node_ip_address="127.0.0.1", _temp_dir=temp_dir)
except BaseException:
    shutil.rmtree(temp_dir, ignore_errors=True)
    raise


@ray.remote
class Worker:
    def trivial(self):
        return 1

    def echo(self, b):
        return b

    def pid(self):
        return os.getpid()


@ray.remote
def trivial():
    return 1


@ray.remote
def echo(b):
    return b


@ray.remote
def sleepy():
    time.sleep(0.1)


actor: dict[str, object] = {}
task: dict[str, object] = {}
notes: dict[str, str] = {}
try:
    pool = [Worker.remote() for _ in range(8)]
    ray.get([w.trivial.remote() for w in pool])
    ray.get([sleepy.remote() for _ in range(16)])  # 8 task workers started

    actor.update(latency(lambda: ray.get(pool[0].trivial.remote()), opts["warm"]))
    task.update(latency(lambda: ray.get(trivial.remote()), opts["warm"]))

    for n in (8, 2):
        actor[f"tput{n}"] = throughput([lambda w=w: ray.get(w.trivial.remote()) for w in pool[:n]],
                                       opts["seconds"], opts["warmup_s"])
        task[f"tput{n}"] = throughput([lambda: ray.get(trivial.remote())] * n, opts["seconds"], opts["warmup_s"])
    notes["tput8"] = "Ray actors: one actor per caller thread (a pool of 8, one call at a time each, as an atoll worker)"

    payload = os.urandom(opts["payload_bytes"])

    def round_trip(remote) -> None:
        out = ray.get(remote(payload))
        assert len(out) == len(payload)

    round_trip(pool[1].echo.remote), round_trip(echo.remote)
    actor["mb100_s"] = median_time(lambda: round_trip(pool[1].echo.remote), opts["payload_runs"])
    task["mb100_s"] = median_time(lambda: round_trip(echo.remote), opts["payload_runs"])
    payload = b""  # the 100 MB freed

    ray.get([sleepy.remote() for _ in range(64)])
    task["fanout"] = median_time(lambda: ray.get([sleepy.remote() for _ in range(64)]), opts["fanout_runs"])
    notes["fanout"] = "Ray: 64 tasks on num_cpus=8, its worker processes already started"
    # Ray's fan-out above ran on started workers already: the same figure.
    task["fanout_warm"] = task["fanout"]

    def new_actor() -> None:
        w = Worker.remote()
        ray.get(w.trivial.remote())
        ray.kill(w)

    actor["cold"] = median_time(new_actor, opts["cold"])

    idle = Worker.remote()
    pid = ray.get(idle.pid.remote())
    time.sleep(1)
    actor["mem"] = pss_mib(pid)
    ray.kill(idle)

    # A new runtime environment per measurement: each permutation of the
    # packages hashes differently, so Ray builds it anew. Ray runs pip with
    # --no-cache-dir, so no cache of pip's is ever warm; the first build
    # warms the rest (virtualenv's seed wheels, the runtime env agent).
    perms = itertools.permutations(opts["requirements"])
    times = []
    for i, perm in enumerate(itertools.islice(perms, opts["env_runs"] + 1)):
        t = time.perf_counter()
        w = Worker.options(runtime_env={"pip": list(perm)}).remote()
        ray.get(w.trivial.remote(), timeout=600)
        if i:
            times.append(time.perf_counter() - t)
        ray.kill(w)
    actor["env"] = statistics.median(times)
    notes["env"] = "Ray: a new actor with runtime_env pip, after one such build (Ray runs pip with --no-cache-dir)"
finally:
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)

print(json.dumps({"actor": actor, "task": task, "notes": notes}))
