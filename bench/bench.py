"""atoll benchmarks: start a real server and print figures.

    python bench/bench.py [calls] [--warm N] [--cold N]

calls: warm call round trip (p50/p99 over --warm calls of a trivial
function) and cold start (p50 over --cold calls with keep_alive=0, each on a
new worker), with a bare `python -c pass` for scale.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python" / "tests"))

from conftest import Server  # noqa: E402  (the test suite's server runner)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


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
    warm = timed(trivial, args.warm)
    cold = timed(trivial_cold, args.cold)
    bare = bare_python(args.cold)
    print(f"warm call round trip  ({args.warm} calls): p50 {ms(percentile(warm, 50))}   p99 {ms(percentile(warm, 99))}")
    print(f"cold start, new worker ({args.cold} calls): p50 {ms(percentile(cold, 50))}   p99 {ms(percentile(cold, 99))}")
    print(f"bare `python -c pass`  ({args.cold} runs):  p50 {ms(percentile(bare, 50))}")


SUITES = {"calls": bench_calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="*", help=f"which to run, of {', '.join(SUITES)} (all by default)")
    parser.add_argument("--warm", type=int, default=2000)
    parser.add_argument("--cold", type=int, default=30)
    parser.add_argument("--server-arg", action="append", default=[], help="extra `atoll server` flag")
    args = parser.parse_args()
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(sorted(unknown))}; choose from {', '.join(SUITES)}")
    with tempfile.TemporaryDirectory(prefix="atoll-bench-") as tmp:
        server = Server(Path(tmp) / "data", extra_args=args.server_arg).start()
        os.environ["ATOLL_HOST"] = server.address
        try:
            print(f"atoll benchmarks on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
            for suite in args.suites or SUITES:
                SUITES[suite](args, server)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
