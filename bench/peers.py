"""`bench.py peers`: atoll beside Ray and fal's isolate, on the same machine
in the same run, as one table with the ratios.

Each peer is installed by the benchmark itself, at pinned versions, into
its own scratch venv under ~/.cache/atoll-bench (uv if present, else pip;
reused while its versions match), and measured by a script of its own run
by that venv's Python (peer_ray.py, peer_isolate.py); atoll is measured
here, against a server the benchmark starts (runc, XS unless noted). All
traffic stays on loopback: Ray's node address is 127.0.0.1 with no
dashboard and no usage stats, isolate's agents listen on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from measure import children, latency, median_time, process_name, pss_mib, throughput

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Servers log as a deployed one does (the test suite's log at debug level,
# a line or more per call, is not what users run).
os.environ.setdefault("ATOLL_LOG_LEVEL", "info")

RAY_VERSION = "2.60.0"
ISOLATE_VERSION = "0.26.12"
# Ray's runtime_env pip builds a virtualenv with the virtualenv package and
# installs with the pip of its own venv; isolate's virtualenv backend needs
# its "build" extra, and cloudpickle to send functions defined in a script.
RAY_PACKAGES = {"ray": RAY_VERSION, "virtualenv": "21.15.7", "pip": "26.3"}
ISOLATE_PACKAGES = {"isolate": ISOLATE_VERSION, "virtualenv": "21.15.7", "cloudpickle": "3.1.2"}
ISOLATE_EXTRAS = {"isolate": "[build]"}

ENV_REQUIREMENTS = ["pyjokes", "cowsay", "six"]
PAYLOAD_BYTES = 100_000_000
PAYLOAD_RUNS = 3
ENV_RUNS = 3
RAY_ENV_RUNS = 2  # each is a pip install of several seconds
COLD_RUNS = 10
RAY_COLD_RUNS = 5  # a new actor takes a second or two
FANOUT_RUNS = 1
PEER_TIMEOUT = 900

# Environment for the peers' processes: Ray on loopback without reporting
# usage; without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray looks for a
# routable address of this machine and runs its cluster on it. Ray's
# dashboard head asks the cloud metadata address (169.254.169.254) which
# cloud it is on even with usage stats off; plain-HTTP requests go to a
# closed loopback port instead (refused at once, Ray carries on), while
# loopback itself is reached directly and pip's HTTPS index is unaffected.
PEER_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1",
            "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost,::1", "no_proxy": "127.0.0.1,localhost,::1"}


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str  # "ms", "s", "rate" (calls/s) or "MiB"
    lower_is_better: bool = True


ROWS = [
    Row("rt_p50", "warm round trip p50, trivial function", "ms"),
    Row("rt_p99", "warm round trip p99, trivial function", "ms"),
    Row("tput8", "calls/s, 8 caller threads", "rate", lower_is_better=False),
    Row("tput2", "calls/s, 2 caller threads", "rate", lower_is_better=False),
    Row("mb100_s", "100 MB argument round trip (S)", "ms"),
    Row("mb100_xs", "100 MB argument round trip on XS (256 MiB)", "ms"),
    Row("fanout", "64 × 100 ms sleeps submitted at once", "s"),
    Row("fanout_warm", "64 × 100 ms sleeps, every system's workers started already", "s"),
    Row("env", "new environment, 3 small packages, warm caches", "ms"),
    Row("cold", "cold start, environment cached", "ms"),
    Row("mem", "idle warm worker memory (PSS)", "MiB"),
]

# Which variants of each peer a column shows, in order.
PEERS = {"atoll": [""], "Ray": ["actor", "task"], "isolate": [""], "other": ["bare uv", "python -c pass"]}


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atoll-bench"


def installed_versions(python: Path, names: list[str]) -> dict[str, str | None]:
    probe = ("import importlib.metadata as m, json, sys\n"
             "def v(n):\n"
             "    try: return m.version(n)\n"
             "    except m.PackageNotFoundError: return None\n"
             "print(json.dumps({n: v(n) for n in sys.argv[1:]}))")
    done = subprocess.run([str(python), "-c", probe, *names], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def peer_python(name: str, packages: dict[str, str], extras: dict[str, str] | None = None) -> Path:
    """The Python of the scratch venv cache/<name>-venv holding packages at
    their pinned versions, installed from the package index on first use
    (or when a version differs) with uv, else pip."""
    venv = cache_dir() / f"{name}-venv"
    python = venv / "bin" / "python"
    if python.exists() and installed_versions(python, list(packages)) == packages:
        return python
    cache_dir().mkdir(parents=True, exist_ok=True)
    specs = [f"{n}{(extras or {}).get(n, '')}=={v}" for n, v in packages.items()]
    print(f"installing {' '.join(specs)} into {venv} ...", flush=True)
    uv = shutil.which("uv")
    if uv:
        if not python.exists():
            subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(python), *specs], check=True)
    else:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *specs], check=True)
    return python


def ray_python() -> Path:
    return peer_python("ray", RAY_PACKAGES)


def isolate_python() -> Path:
    return peer_python("isolate", ISOLATE_PACKAGES, ISOLATE_EXTRAS)


def real_uv() -> str | None:
    """uv's own binary, not a wrapper script in front of it (a pyenv shim
    costs tens of milliseconds a run), as atoll's builder finds it."""
    uv = shutil.which("uv")
    if not uv:
        return None
    done = subprocess.run([uv, "run", "--no-project", "--no-config", "--quiet", "printenv", "UV"],
                          capture_output=True, text=True)
    found = done.stdout.strip()
    return found if done.returncode == 0 and found and os.path.exists(found) else uv


# --- atoll ------------------------------------------------------------------


def worker_memory(server, cgroup_text: str) -> tuple[float, str]:
    """PSS (MiB) summed over the one worker's processes: everything under
    the server (the runtime's process, the network stack, the agent, the
    runner) and anything in the worker's cgroup (in case the runtime left
    it re-parented); with a breakdown by process."""
    pids = set(children(server.proc.pid))
    path = next((line.split(":", 2)[2] for line in cgroup_text.splitlines() if line.startswith("0::")), "/")
    if path != "/":
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cgroup") as f:
                        if f"0::{path}\n" in f.read():
                            pids.add(int(entry))
                except OSError:
                    continue
    parts: dict[str, float] = {}
    for pid in pids:
        try:
            name = process_name(pid)
            mib = pss_mib(pid)
        except (OSError, ValueError):
            continue  # gone meanwhile, or a kernel thread
        label = "agent" if name == "atoll" else "runner" if name.startswith("python") else name
        parts[label] = parts.get(label, 0) + mib
    total = sum(parts.values())
    return total, " + ".join(f"{k} {v:.1f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))


def measure_atoll(opts: dict, server) -> tuple[dict, dict]:
    from atoll import OutOfMemoryError, isolated
    from conftest import atoll_binary

    out: dict[str, object] = {}
    notes: dict[str, str] = {}
    tag = uuid.uuid4().hex[:8]

    def fresh(fn):
        """fn under a name of this run's own, so that it starts on no warm
        worker of an earlier run (warm pools are per function name)."""
        fn.__qualname__ = f"{fn.__qualname__}_{tag}"
        return fn

    @isolated(keep_alive=300)
    @fresh
    def trivial(probe=False):
        if probe:
            return open("/proc/self/cgroup").read()
        return 1

    out.update(latency(trivial, opts["warm"]))
    cgroup = trivial(True)
    time.sleep(1)
    out["mem"], notes["mem"] = worker_memory(server, cgroup)

    # Calls waiting for a worker say so on stderr, once each.
    with contextlib.redirect_stderr(io.StringIO()):
        for n in (2, 8):
            out[f"tput{n}"] = throughput([trivial] * n, opts["seconds"], opts["warmup_s"] * (2 if n == 8 else 1))

    payload = os.urandom(PAYLOAD_BYTES)
    for key, machine_type in (("mb100_s", "S"), ("mb100_xs", "XS")):
        @isolated(machine_type=machine_type, keep_alive=300, retries=0)
        @fresh
        def echo(b):
            return b

        def round_trip(echo=echo) -> None:
            assert len(echo(payload)) == len(payload)

        try:
            # The worker started and one untimed round trip, as Ray and
            # isolate get (its first touch of 100 MB of fresh memory is
            # the machine's, not the transport's).
            echo(b"")
            round_trip()
            out[key] = median_time(round_trip, PAYLOAD_RUNS if machine_type == "S" else 1)
        except OutOfMemoryError:
            out[key] = "out of memory"
        except Exception as exc:  # any other failure is the row's figure
            out[key] = f"failed: {type(exc).__name__}"
    payload = b""  # the 100 MB freed

    @isolated(machine_type="XS", keep_alive=10)
    @fresh
    def sleepy():
        time.sleep(0.1)

    def fanout() -> None:
        futures = [sleepy.submit() for _ in range(64)]
        for f in futures:
            f.result()

    with contextlib.redirect_stderr(io.StringIO()):
        out["fanout"] = median_time(fanout, FANOUT_RUNS)
        # Again at once, on the eight workers the first one left warm.
        out["fanout_warm"] = median_time(fanout, FANOUT_RUNS)
    notes["fanout"] = "atoll: `f.submit()` ×64 on XS, from no warm worker, then every result"
    notes["fanout_warm"] = "atoll: the same at once again, on the 8 XS workers the first left warm"
    notes["mb100_xs"] = "the XS row is atoll's alone: Ray and isolate set no memory limit per worker"

    binary, data_dir = atoll_binary(), str(server.data_dir)

    def build() -> float:
        subprocess.run([binary, "envs", "prune", "--max-bytes", "1", "--data-dir", data_dir], check=True,
                       capture_output=True)
        t = time.perf_counter()
        subprocess.run([binary, "envs", "build", "--data-dir", data_dir, "--python", "%d.%d" % sys.version_info[:2],
                        *ENV_REQUIREMENTS], check=True, capture_output=True)
        return time.perf_counter() - t

    build()  # warm caches
    out["env"] = statistics.median(build() for _ in range(ENV_RUNS))
    notes["env"] = "atoll: `atoll envs build` after `atoll envs prune`"

    @isolated(keep_alive=0)
    @fresh
    def trivial_cold():
        return 1

    trivial_cold()  # the environment, once
    out["cold"] = median_time(trivial_cold, COLD_RUNS)
    notes["cold"] = "atoll: keep_alive=0, a new worker each call"
    return out, notes


def measure_bare(uv: str | None) -> dict:
    """bare `uv venv` + `uv pip install` with a warm cache, and a bare
    `python -c pass`."""
    out: dict[str, dict] = {"bare uv": {}, "python -c pass": {}}
    out["python -c pass"]["cold"] = median_time(
        lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), COLD_RUNS)
    if not uv:
        out["bare uv"]["env"] = "— (no uv here)"
        return out
    with tempfile.TemporaryDirectory(prefix="atoll-bench-uv-") as tmp:
        def build(i: int) -> float:
            venv = Path(tmp) / f"v{i}"
            t = time.perf_counter()
            subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
            subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *ENV_REQUIREMENTS],
                           check=True)
            return time.perf_counter() - t

        build(0)
        out["bare uv"]["env"] = statistics.median(build(i) for i in range(1, ENV_RUNS + 1))
    return out


def run_peer(python: Path, script: str, opts: dict, uv: str | None) -> dict:
    """The peer script's figures; a failed run is tried once more (on a
    loaded machine Ray's node can miss its fixed 30 s start-up wait)."""
    env = {**os.environ, **PEER_ENV}
    if uv:
        env["ISOLATE_UV_EXE"] = uv
    for attempt in (1, 2):
        done = subprocess.run([str(python), str(HERE / script), json.dumps(opts)], capture_output=True, text=True,
                              timeout=PEER_TIMEOUT, env=env, cwd=HERE)
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            return json.loads(lines[-1])
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if attempt == 1:
            print(f"  {script} failed (exit {done.returncode}): {tail[:200]}; once more", flush=True)
    raise RuntimeError(f"{script} failed (exit {done.returncode}): {tail[:200]}")


# --- the table --------------------------------------------------------------


def fmt(row: Row, value: float, unit: bool = True) -> str:
    if row.unit == "ms":
        v = value * 1000
        text = f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"
        return f"{text} ms" if unit else text
    if row.unit == "s":
        return f"{value:.2f} s" if unit else f"{value:.2f}"
    if row.unit == "rate":
        return f"{value:,.0f}"
    return f"{value:.1f} MiB" if unit else f"{value:.1f}"


def summarize(row: Row, values: list, detail: str = "") -> tuple[str, float | None]:
    """A cell over the runs: the median, and min–max when there are
    several; strings (a row that could not be measured) as they are."""
    numbers = [v for v in values if isinstance(v, (int, float))]
    words = sorted({v for v in values if isinstance(v, str)})
    if not numbers:
        return (" / ".join(words) if words else ""), None
    med = statistics.median(numbers)
    text = fmt(row, med)
    extra = []
    if len(numbers) > 1:
        extra.append(f"{fmt(row, min(numbers), False)}–{fmt(row, max(numbers), False)}")
    if detail:
        extra.append(f"last run {detail}" if len(values) > 1 else detail)
    if extra:
        text += f" ({'; '.join(extra)})"
    if words:
        text += f"; {len(values) - len(numbers)} of {len(values)} runs: {', '.join(words)}"
    return text, med


def ratio(row: Row, atoll: float | None, peer: list[float]) -> str:
    if atoll is None or not peer:
        return "—"
    best = min(peer) if row.lower_is_better else max(peer)
    r = atoll / best
    ahead = r < 1 if row.lower_is_better else r > 1
    return f"{r:.2f}× {'ahead' if ahead else 'behind'}"


def table(runs: list[dict]) -> str:
    lines = ["| figure | atoll | Ray | isolate | other | atoll/Ray | atoll/isolate |",
             "|---|---|---|---|---|---|---|"]
    for row in ROWS:
        cells, medians = {}, {}
        for peer, variants in PEERS.items():
            parts, meds = [], []
            for variant in variants:
                values = [r[peer][variant][row.key] for r in runs if row.key in r.get(peer, {}).get(variant, {})]
                if not values:
                    continue
                detail = runs[-1].get("notes", {}).get(peer, {}).get(row.key, "") if row.key == "mem" else ""
                text, med = summarize(row, values, detail)
                label = variant if peer != "other" else {"bare uv": "bare `uv venv` + `uv pip install`",
                                                         "python -c pass": "bare `python -c pass`"}[variant]
                parts.append(f"{label} {text}" if label else text)
                if med is not None:
                    meds.append(med)
            cells[peer] = ", ".join(parts) or ("" if peer == "other" else "—")
            medians[peer] = meds
        atoll = medians["atoll"][0] if medians["atoll"] else None
        lines.append(f"| {row.label} | {cells['atoll']} | {cells['Ray']} | {cells['isolate']} | {cells['other']} "
                     f"| {ratio(row, atoll, medians['Ray'])} | {ratio(row, atoll, medians['isolate'])} |")
    return "\n".join(lines)


def one_run(args, index: int, data_dir: Path, pythons: dict, uv: str | None) -> dict:
    from conftest import Server

    opts = {"warm": args.warm, "seconds": args.peer_seconds, "warmup_s": 1.0}
    peer_opts = {**opts, "payload_bytes": PAYLOAD_BYTES, "payload_runs": PAYLOAD_RUNS, "fanout_runs": FANOUT_RUNS,
                 "requirements": ENV_REQUIREMENTS}
    result: dict = {"atoll": {}, "Ray": {}, "isolate": {}, "other": {}, "notes": {}, "seconds": {}}

    def step(name: str, fn) -> None:
        waited = settle()
        t = time.monotonic()
        print(f"  run {index}: {name} ..." + (f" (after {waited:.1f} s for the machine to settle)" if waited >= 1 else ""),
              flush=True)
        try:
            fn()
        except Exception as exc:  # a peer that cannot run is a row of "—" with the reason
            reason = f"— ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})"
            print(f"  run {index}: {name} failed: {reason}", flush=True)
            result.setdefault("failed", {})[name] = reason
        result["seconds"][name] = time.monotonic() - t

    def atoll() -> None:
        # A server of the run's own, on the data directory every run shares
        # (environments stay built): no worker of an earlier run is left.
        server = Server(data_dir, extra_args=args.server_arg)
        key_id, secret = server.create_key()
        server.start()
        saved = {k: os.environ.get(k) for k in ("ATOLL_HOST", "ATOLL_KEY_ID", "ATOLL_KEY_SECRET")}
        os.environ.update(ATOLL_HOST=server.address, ATOLL_KEY_ID=key_id, ATOLL_KEY_SECRET=secret)
        try:
            figures, notes = measure_atoll(opts, server)
        finally:
            server.stop()
            for k, v in saved.items():
                if v is not None:
                    os.environ[k] = v
        result["atoll"][""] = figures
        result["notes"]["atoll"] = notes

    def ray() -> None:
        got = run_peer(pythons["ray"], "peer_ray.py", {**peer_opts, "cold": RAY_COLD_RUNS, "env_runs": RAY_ENV_RUNS}, uv)
        result["Ray"] = {"actor": got["actor"], "task": got["task"]}
        result["notes"]["Ray"] = got["notes"]

    def isolate() -> None:
        got = run_peer(pythons["isolate"], "peer_isolate.py", {**peer_opts, "cold": COLD_RUNS, "env_runs": ENV_RUNS}, uv)
        result["isolate"] = {"": got["agent"]}
        result["notes"]["isolate"] = got["notes"]

    def bare() -> None:
        result["other"] = measure_bare(uv)

    step("atoll", atoll)
    for key, name, fn in (("ray", "Ray", ray), ("isolate", "isolate", isolate)):
        if key in pythons:
            step(name, fn)
    step("bare uv and python", bare)
    return result


def busy(window: float) -> float:
    """The share of all CPUs' time that was busy over window seconds."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle, iowait
        return sum(fields) - idle, sum(fields)
    b0, t0 = sample()
    time.sleep(window)
    b1, t1 = sample()
    return (b1 - b0) / max(1, t1 - t0)


def settle(limit: float = 30.0) -> float:
    """Waits (up to limit seconds) until the machine is quiet: a peer's
    processes that outlive its script (Ray's node shutting down, isolate's
    agents exiting) must not load the next peer's measurement. Returns the
    seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit and busy(0.5) > 0.15:
        pass
    return time.monotonic() - start


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def bench_peers(args, _server) -> None:
    began = time.monotonic()
    uv = real_uv()
    pythons: dict[str, Path] = {}
    failed: dict[str, str] = {}
    for key, name, get in (("ray", "Ray", ray_python), ("isolate", "isolate", isolate_python)):
        try:
            pythons[key] = get()
        except (subprocess.SubprocessError, OSError) as exc:
            failed[name] = f"— (could not install: {exc})"
    loads = [load()]
    runs = []
    with tempfile.TemporaryDirectory(prefix="atoll-bench-peers-") as tmp:
        for i in range(1, args.runs + 1):
            t = time.monotonic()
            runs.append(one_run(args, i, Path(tmp) / "data", pythons, uv))
            loads.append(load())
            steps = ", ".join(f"{name} {sec:.0f} s" for name, sec in runs[-1]["seconds"].items())
            print(f"  run {i} took {time.monotonic() - t:.0f} s ({steps})", flush=True)
    took = time.monotonic() - began

    print()
    print(table(runs))
    print()
    versions = [f"Python {sys.version.split()[0]}"]
    if "ray" in pythons:
        versions.append(f"Ray {RAY_VERSION}")
    if "isolate" in pythons:
        versions.append(f"isolate {ISOLATE_VERSION}")
    if uv:
        versions.append(subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.split("(")[0].strip())
    rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    print(f"{os.cpu_count()} CPUs, {', '.join(versions)}, atoll {rev}; "
          f"{args.runs} run(s){' (median, min–max)' if args.runs > 1 else ''} in {took:.0f} s; "
          f"load average before/after each run: {' → '.join(loads)}")
    print("ratio: atoll's figure ÷ the peer's best variant (times: below 1 is atoll ahead; calls/s: above 1).")
    notes = {}
    for r in runs:
        for peer, n in r.get("notes", {}).items():
            for key, text in n.items():
                if key != "mem" or peer != "atoll":
                    notes.setdefault(text, None)
    for text in notes:
        print(f"- {text}")
    print("- memory: PSS from /proc/<pid>/smaps_rollup; atoll: summed over the worker's processes "
          "(runtime, network stack, agent, runner); Ray: the idle actor's process; isolate: the agent's process")
    for name, reason in failed.items():
        print(f"- {name}: {reason}")
    for i, r in enumerate(runs, 1):
        for name, reason in r.get("failed", {}).items():
            print(f"- {name}, run {i}: {reason}")
