#!/usr/bin/env python3
"""A new environment from warm caches: atoll builds beside bare uv, in turns.

Each round runs, one after the other, for every atoll binary given:
`atoll envs prune --max-bytes 1` then `atoll envs build` (the process's
wall time, as `bench.py peers` takes it), and bare `uv venv` + `uv pip
install` with the same uv binary and the same cache (given back to the
build sandbox's user after each bare run, untimed). Turns keep a busy host
from favouring one side. Prints each side's median and spread, the ratio to
bare uv, and the load.

    python3 bench/envbuild_ab.py --rounds 9 new=bin/atoll base=/tmp/base/atoll
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REQUIREMENTS = ["pyjokes", "cowsay", "six"]
BUILD_USER = "65533"  # sandbox.BuildUserID


CPU: dict[str, list[float]] = {}


def children_cpu() -> float:
    """CPU seconds of the children waited for so far (theirs included)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str], **kw) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t


def real_uv() -> str:
    """uv's own binary, behind any wrapper (uv exports it as $UV)."""
    out = subprocess.run(["uv", "run", "--no-project", "--no-config", "--quiet", "printenv", "UV"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return out or shutil.which("uv") or "uv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+", help="LABEL=PATH of atoll binaries")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--python", default="%d.%d" % sys.version_info[:2])
    ap.add_argument("--data-dir", help="default: a fresh temporary directory")
    args = ap.parse_args()

    binaries = dict(b.split("=", 1) for b in args.binaries)
    tmp = Path(tempfile.mkdtemp(prefix="atoll-envbuild-ab-"))
    tmp.chmod(0o755)  # the build user reaches its venvs through it
    data_dir = Path(args.data_dir) if args.data_dir else tmp / "data"
    cache = data_dir / "envs" / "cache"
    uv = real_uv()
    python = subprocess.run([uv, "python", "find", "--system", "--no-project", "--no-config", f"cpython@{args.python}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    bare_dir = tmp / "bare"
    bare_dir.mkdir()
    bare_env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_LINK_MODE": "hardlink"}

    def atoll(binary: str) -> float:
        subprocess.run([binary, "envs", "prune", "--max-bytes", "1", "--data-dir", str(data_dir)],
                       check=True, capture_output=True)
        c = children_cpu()
        took = timed([binary, "envs", "build", "--data-dir", str(data_dir), "--python", args.python, *REQUIREMENTS])
        CPU.setdefault(binary, []).append(children_cpu() - c)
        return took

    def bare(i: int) -> float:
        venv = bare_dir / f"v{i}"
        c = children_cpu()
        t = time.perf_counter()
        subprocess.run([uv, "venv", "-q", "--python", python, str(venv)], check=True, env=bare_env)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *REQUIREMENTS],
                       check=True, env=bare_env)
        took = time.perf_counter() - t
        CPU.setdefault("bare uv", []).append(children_cpu() - c)
        shutil.rmtree(venv)
        # What uv wrote as root goes back to the builds' user.
        subprocess.run(["chown", "-R", f"{BUILD_USER}:{BUILD_USER}", str(cache)], check=True)
        return took

    try:
        for binary in binaries.values():
            atoll(binary)  # warms the cache and each binary's own state
        bare(0)
        for binary in binaries.values():
            atoll(binary)
        took: dict[str, list[float]] = {label: [] for label in binaries} | {"bare uv": []}
        for i in range(args.rounds):
            for label, binary in binaries.items():
                took[label].append(atoll(binary))
            took["bare uv"].append(bare(i + 1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = statistics.median(took["bare uv"])
    print(f"new environment {' '.join(REQUIREMENTS)}, python {args.python}, warm caches, "
          f"{args.rounds} rounds in turns (uv {uv})")
    for label, ts in took.items():
        m = statistics.median(ts)
        cpu = statistics.median(CPU[binaries.get(label, label)])
        print(f"  {label:10s} p50 {m * 1000:6.0f} ms  (min {min(ts) * 1000:.0f}, max {max(ts) * 1000:.0f})"
              f"  {m / base:.2f}x bare uv;  CPU p50 {cpu * 1000:.0f} ms")
    print("  load:", os.getloadavg())
    print(json.dumps({k: [round(t * 1000, 1) for t in v] for k, v in took.items()}))


if __name__ == "__main__":
    main()
