"""atoll benchmarks: start a real server and print figures.

    python bench/bench.py [calls] [--warm N] [--cold N]
    python bench/bench.py peers [--runs 3]

calls: warm call round trip (p50/p99 over --warm calls of a trivial
function, and the CPU each call costs the caller, the server and each of
the worker's processes) and cold start (p50 over --cold calls with
keep_alive=0, each on a new worker), with a bare `python -c pass` for scale.
sandbox: cold start with the environment cached, with the runc and runsc
(gVisor) sandboxes and with the plain-process launcher, beside a bare
`python -c pass`.
envs: a new environment for pyjokes, cowsay and six from warm caches,
atoll beside `python -m venv` + `pip install`.
overload: more callers than worker slots (--overload-callers threads, 12
by default, calling a trivial XS function for --overload-seconds): calls/s,
p50/p99 and how many workers were started (on 2 CPUs there are 8 XS slots;
warm workers handed from call to call, none started beyond the slots).

map: items/s of `f.map` over a trivial function with 8 XS workers, beside
Ray tasks (`ray.get([f.remote(i) for i in ...])` with 8 CPUs) in the same
run; Ray is installed into a scratch venv under ~/.cache/atoll-bench.

peers (only when named): atoll beside Ray 2.60 (actors and tasks) and fal's
isolate 0.26 (its agent called directly), each installed by the benchmark into
its own scratch venv under ~/.cache/atoll-bench, same machine, same run: warm
round trip, calls/s with 8 and 2 caller threads, a 100 MB argument, 64 sleeps
at once, a new environment, cold start and idle worker memory, printed as one
table with the ratios (`--runs 3`: median and min–max of three runs).

kubernetes (only when named; needs KUBECONFIG, e.g. from scripts/kube-up.sh):
a first call on a new pod with the environment cached on the node, on a node
without it, and the warm round trip through dial-back, beside the local
launcher in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python" / "tests"))
# Servers log as a deployed one does (the test suite's log at debug level,
# a line or more per call, is not what users run).
os.environ.setdefault("ATOLL_LOG_LEVEL", "info")

from conftest import Server  # noqa: E402  (the test suite's server runner)
from measure import children, cpu_ns, percentile, process_name, timed  # noqa: E402
from peers import PEER_ENV, bench_peers, ray_python  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def bare_python(n: int) -> list[float]:
    return timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), n)


def bench_calls(args: argparse.Namespace, server: Server) -> None:
    from atoll import isolated

    @isolated(keep_alive=300)
    def trivial():
        return 1

    @isolated(keep_alive=0)
    def trivial_cold():
        return 1

    timed(trivial, 50)  # start the worker and warm up the channel
    # Every process's CPU over the warm calls: this one (the caller), the
    # server and everything under it (the worker's processes).
    pids = [os.getpid(), server.proc.pid, *children(server.proc.pid)]
    before = {pid: cpu_ns(pid) for pid in pids}
    warm = timed(trivial, args.warm)
    spent = {pid: cpu_ns(pid) - before[pid] for pid in pids}
    cold = timed(trivial_cold, args.cold)
    bare = bare_python(args.cold)
    print(f"warm call round trip  ({args.warm} calls): p50 {ms(percentile(warm, 50))}   p99 {ms(percentile(warm, 99))}")
    labels = {os.getpid(): "caller", server.proc.pid: "server"}
    per_call = ", ".join(f"{labels.get(pid) or process_name(pid)} {ns / args.warm / 1000:.0f}"
                         for pid, ns in spent.items() if ns >= args.warm * 1000)
    print(f"CPU per warm call, µs: {per_call}")
    print(f"cold start, new worker ({args.cold} calls): p50 {ms(percentile(cold, 50))}   p99 {ms(percentile(cold, 99))}")
    print(f"bare `python -c pass`  ({args.cold} runs):  p50 {ms(percentile(bare, 50))}")


def bench_overload(args: argparse.Namespace, server: Server) -> None:
    import contextlib
    import io
    import threading

    from atoll import isolated

    @isolated(keep_alive=300)
    def trivial_overload():
        return 1

    trivial_overload()  # the environment
    started_before = server.log().count('msg="worker started"')
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + args.overload_seconds

    def caller() -> None:
        mine = []
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            trivial_overload()
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=caller) for _ in range(args.overload_callers)]
    began = time.monotonic()
    # Queued calls say so on stderr ("waiting for capacity"), once each.
    with contextlib.redirect_stderr(io.StringIO()):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    took = time.monotonic() - began
    started = server.log().count('msg="worker started"') - started_before
    print(f"overload, {args.overload_callers} callers ({len(latencies)} calls in {took:.1f} s): "
          f"{len(latencies) / took:.0f} calls/s   p50 {ms(percentile(latencies, 50))}   "
          f"p99 {ms(percentile(latencies, 99))}   workers started {started}")


def cold_start(server: Server, n: int) -> list[float]:
    from atoll import CloudKeyCredentials, isolated
    from atoll._host import CloudHost

    @isolated(keep_alive=0, host=CloudHost(server.address), credentials=CloudKeyCredentials(*server.keys))
    def trivial():
        return 1

    trivial()  # builds the environment once; every timed call starts a worker
    return timed(trivial, n)


def bench_sandbox(args: argparse.Namespace, _server: Server) -> None:
    """Cold start (environment cached) per launcher, beside bare Python."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="atoll-bench-sandbox-") as tmp:
        for kind in ("runc", "runsc", "process"):
            extra = ["--sandbox", kind, *args.server_arg]
            if kind == "runsc" and not any(a.startswith("--network") for a in args.server_arg):
                extra += ["--network", "host"]  # gVisor brings its own network stack
            srv = Server(Path(tmp) / kind, extra_args=extra)
            try:
                srv.keys = srv.create_key()
                srv.start()
            except RuntimeError as exc:
                print(f"cold start, {kind:<8}: unavailable here ({str(exc).splitlines()[0]})")
                continue
            try:
                rows.append((f"cold start, {kind} sandbox" if kind != "process" else "cold start, process launcher", cold_start(srv, args.cold)))
            finally:
                srv.stop()
    rows.append(("bare `python -c pass`", bare_python(args.cold)))
    for label, values in rows:
        print(f"{label:<32} ({len(values)} runs): p50 {ms(percentile(values, 50))}   p99 {ms(percentile(values, 99))}")



def bench_sync(args: argparse.Namespace, server: Server) -> None:
    """sync_dir throughput: one 1 GB file and 10,000 small files, the first
    sync and an unchanged second one (which sends nothing)."""
    import resource

    from atoll import CloudKeyCredentials
    from atoll._host import CloudHost
    from atoll._sync import sync_dir

    host = CloudHost(server.address)
    creds = CloudKeyCredentials(*server.create_key("bench"))

    def server_peak_rss() -> str:
        with open(f"/proc/{server.proc.pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return f"{kb / 1024:.0f} MiB"

    def run(label: str, src: Path, remote: str, files: int, total: int) -> None:
        for attempt in ("first sync", "second sync, unchanged"):
            t = time.perf_counter()
            result = sync_dir(src, remote, host=host, credentials=creds)
            dt = time.perf_counter() - t
            rate = f"{total / dt / 1e6:7.1f} MB/s" + (f" {files / dt:7.0f} files/s" if files > 1 else " " * 16)
            print(
                f"sync {label}, {attempt:<23}: {dt:6.2f} s {rate}"
                f"  (sent {result.bytes_sent / 1e6:.1f} MB in {result.files_sent} files)"
            )

    with tempfile.TemporaryDirectory(prefix="atoll-bench-sync-") as tmp:
        big = Path(tmp) / "big"
        big.mkdir()
        block = os.urandom(16 << 20)
        size = 1 << 30
        with open(big / "weights.bin", "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
        run("one 1 GiB file    ", big, "/data/bench/big", 1, size)

        small = Path(tmp) / "small"
        total = 0
        for i in range(10_000):
            d = small / f"dir{i // 100:03d}"
            d.mkdir(parents=True, exist_ok=True)
            data = os.urandom(512 + (i * 37) % 3584)  # 0.5 to 4 KiB
            (d / f"file{i:05d}.txt").write_bytes(data)
            total += len(data)
        run("10,000 small files", small, "/data/bench/small", 10_000, total)
    client_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak memory: server {server_peak_rss()}, client {client_kb / 1024:.0f} MiB (chunks of 1 MiB)")


ENV_REQUIREMENTS = ["pyjokes", "cowsay", "six"]
PYTHON_VERSION = "%d.%d" % sys.version_info[:2]


def bench_envs(args: argparse.Namespace, server: Server) -> None:
    """A new environment for ENV_REQUIREMENTS with warm caches: atoll (uv,
    through `atoll envs build`) beside `python -m venv` + `pip install`."""
    from conftest import atoll_binary

    binary, data_dir = atoll_binary(), str(server.data_dir)

    def atoll_build() -> float:
        subprocess.run([binary, "envs", "prune", "--max-bytes", "1", "--data-dir", data_dir], check=True, capture_output=True)
        t = time.perf_counter()
        subprocess.run([binary, "envs", "build", "--data-dir", data_dir, "--python", PYTHON_VERSION, *ENV_REQUIREMENTS], check=True, capture_output=True)
        return time.perf_counter() - t

    with tempfile.TemporaryDirectory(prefix="atoll-bench-pip-") as tmp:
        venv = Path(tmp) / "venv"
        pip_cache = Path(tmp) / "pip-cache"

        def pip_build() -> float:
            shutil.rmtree(venv, ignore_errors=True)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                            "--cache-dir", str(pip_cache), *ENV_REQUIREMENTS], check=True)
            return time.perf_counter() - t

        atoll_build(), pip_build()  # warm both caches
        runs = max(3, args.env_runs)
        atoll_times = [atoll_build() for _ in range(runs)]
        pip_times = [pip_build() for _ in range(runs)]
    a, p = statistics.median(atoll_times), statistics.median(pip_times)
    print(f"new environment {ENV_REQUIREMENTS}, warm caches ({runs} runs each, p50):")
    print(f"  atoll (uv, `atoll envs build`)     {ms(a)}")
    print(f"  python -m venv + pip install       {ms(p)}")
    print(f"  atoll is {p / a:.1f}x faster")


RAY_SCRIPT = """
import sys, time
import ray

n, workers = int(sys.argv[1]), int(sys.argv[2])
ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
         _node_ip_address="127.0.0.1")

@ray.remote
def trivial(x):
    return x

ray.get([trivial.remote(i) for i in range(500)])  # start the workers
best = 0.0
for _ in range(3):
    t = time.perf_counter()
    out = ray.get([trivial.remote(i) for i in range(n)])
    best = max(best, n / (time.perf_counter() - t))
    assert out == list(range(n))
print(best)
"""


def bench_map(args: argparse.Namespace, server: Server) -> None:
    """items/s of a map over a trivial function on 8 XS workers, atoll
    beside Ray tasks on 8 CPUs."""
    from atoll import isolated

    workers, n = 8, args.map_items

    @isolated(machine_type="XS", keep_alive=300)
    def trivial(x):
        return x

    assert list(trivial.map(range(500), max_concurrency=workers)) == list(range(500))  # start the workers
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        out = list(trivial.map(range(n), max_concurrency=workers))
        best = max(best, n / (time.perf_counter() - t))
        assert out == list(range(n))
    ray_rate = None
    try:
        python = ray_python()
        done = subprocess.run([str(python), "-c", RAY_SCRIPT, str(n), str(workers)], capture_output=True, text=True,
                              timeout=600, env={**os.environ, **PEER_ENV})
        if done.returncode == 0:
            ray_rate = float(done.stdout.strip().splitlines()[-1])
        else:
            print(f"ray failed:\n{done.stderr[-2000:]}")
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"ray could not run: {exc}")
    print(f"map of a trivial function, {n} items, {workers} workers (best of 3):")
    print(f"  atoll f.map, {workers} XS workers        {best:10.0f} items/s")
    if ray_rate is not None:
        print(f"  ray tasks, num_cpus={workers}             {ray_rate:10.0f} items/s")
        print(f"  atoll / ray                         {best / ray_rate:10.2f}x")




def bench_kubernetes(args: argparse.Namespace, server: Server) -> None:
    """Pods on the test cluster beside the local launcher."""
    sys.path.insert(0, str(REPO / "python" / "tests" / "kube"))
    import uuid

    from atoll import CloudKeyCredentials, isolated
    from atoll._host import CloudHost
    from conftest import atoll_binary
    from test_kube import KubeServer, kubectl

    image = subprocess.run(["bash", str(REPO / "scripts" / "kube-image.sh"), "worker", atoll_binary()],
                           check=True, capture_output=True, text=True).stdout.split()[-1]
    ns = f"atoll-bench-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    rows: list[tuple[str, list[float], list[float] | None]] = []
    with tempfile.TemporaryDirectory(prefix="atoll-bench-kube-") as tmp:
        kube = KubeServer(Path(tmp), ns, image, "bench")
        kube.keys = kube.create_key()
        kube.start()
        try:
            def fns(srv):
                host, creds = CloudHost(srv.address), CloudKeyCredentials(*srv.keys)

                @isolated(keep_alive=0, host=host, credentials=creds)
                def cold():
                    return 1

                @isolated(keep_alive=300, host=host, credentials=creds)
                def warm():
                    return 1

                return cold, warm

            server.keys = (os.environ["ATOLL_KEY_ID"], os.environ["ATOLL_KEY_SECRET"])
            (kcold, kwarm), (lcold, lwarm) = fns(kube), fns(server)
            kcold(), lcold()  # environments built, archives cached on the node
            n = max(3, args.cold // 3)
            rows.append(("first call, new pod, env cached on node", timed(kcold, n), timed(lcold, n)))

            def uncached():
                for entry in kube.cache_dir.iterdir():
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                return kcold()

            rows.append(("first call, node without the env", timed(uncached, n), None))
            timed(kwarm, 50), timed(lwarm, 50)
            w = max(100, args.warm // 4)
            rows.append(("warm call round trip (dial-back)", timed(kwarm, w), timed(lwarm, w)))
        finally:
            kube.stop()
            kubectl("delete", "namespace", ns, "--wait=false")
    print(f"{'':<42} {'kubernetes p50':>16} {'p99':>11}   {'local p50':>11}")
    for label, k, local in rows:
        loc = ms(percentile(local, 50)) if local else "     n/a"
        print(f"{label:<42} {ms(percentile(k, 50)):>16} {ms(percentile(k, 99)):>11}   {loc:>11}   ({len(k)} runs)")


SUITES = {"calls": bench_calls, "sandbox": bench_sandbox, "envs": bench_envs, "sync": bench_sync, "map": bench_map,
          "overload": bench_overload, "kubernetes": bench_kubernetes, "peers": bench_peers}
# Suites that need more than this machine, or minutes of it: run only when named.
NAMED_ONLY = {"kubernetes", "peers"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="*", help=f"which to run, of {', '.join(SUITES)} (all by default)")
    parser.add_argument("--warm", type=int, default=2000)
    parser.add_argument("--cold", type=int, default=30)
    parser.add_argument("--env-runs", type=int, default=5)
    parser.add_argument("--overload-callers", type=int, default=12)
    parser.add_argument("--overload-seconds", type=float, default=10)
    parser.add_argument("--map-items", type=int, default=5000)
    parser.add_argument("--server-arg", action="append", default=[], help="extra `atoll server` flag")
    parser.add_argument("--runs", type=int, default=1, help="peers: whole runs, each cell their median and min–max")
    parser.add_argument("--peer-seconds", type=float, default=3, help="peers: seconds each calls/s figure counts")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(sorted(unknown))}; choose from {', '.join(SUITES)}")
    with tempfile.TemporaryDirectory(prefix="atoll-bench-") as tmp:
        server = Server(Path(tmp) / "data", extra_args=args.server_arg)
        key_id, secret = server.create_key()
        server.start()
        os.environ.update(ATOLL_HOST=server.address, ATOLL_KEY_ID=key_id, ATOLL_KEY_SECRET=secret, ATOLL_NO_AUTOSTART="1")
        try:
            print(f"atoll benchmarks on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
            for suite in args.suites or [s for s in SUITES if s not in NAMED_ONLY]:
                SUITES[suite](args, server)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
