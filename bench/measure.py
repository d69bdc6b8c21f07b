"""Measuring helpers shared by the benchmark and the peer scripts.

Standard library only: the peer scripts import this module inside Ray's and
isolate's scratch venvs (their own directory is on sys.path), so every peer
is timed by the same code.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Callable


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median_time(fn: Callable[[], object], n: int) -> float:
    return statistics.median(timed(fn, n))


def latency(fn: Callable[[], object], n: int, warmup: int = 50) -> dict[str, float]:
    """p50 and p99 (seconds) of n calls of fn after warmup calls."""
    timed(fn, warmup)
    values = timed(fn, n)
    return {"rt_p50": percentile(values, 50), "rt_p99": percentile(values, 99)}


def throughput(callers: list[Callable[[], object]], seconds: float, warmup: float) -> float:
    """Calls per second of one thread per entry of callers, each calling its
    own function in a loop; the first warmup seconds are not counted (they
    start workers)."""
    counts = [0] * len(callers)
    start = threading.Barrier(len(callers) + 1)
    counting = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop(i: int, fn: Callable[[], object]) -> None:
        start.wait()
        try:
            while not stop.is_set():
                fn()
                if counting.is_set():
                    counts[i] += 1
        except BaseException as exc:  # reported by the caller below
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=loop, args=(i, fn), daemon=True) for i, fn in enumerate(callers)]
    for t in threads:
        t.start()
    start.wait()
    time.sleep(warmup)
    counting.set()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    # Calls in flight at the stop are counted, and so is their time.
    took = time.perf_counter() - began
    if errors:
        raise errors[0]
    return sum(counts) / took


def pss_mib(pid: int) -> float:
    """The proportional set size of pid in MiB (shared pages split between
    the processes that map them), from /proc/<pid>/smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no Pss in /proc/{pid}/smaps_rollup")


def process_name(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def children(pid: int) -> list[int]:
    """Every descendant of pid (from /proc/*/stat's parent field)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_ns(pid: int) -> int:
    """CPU time pid's threads have run, in nanoseconds, from the scheduler's
    own accounting (/proc/<pid>/task/*/schedstat: exact, where utime and
    stime are sampled at the timer tick); 0 for a process that is gone."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total
