"""Large payloads: a function that receives N MB of bytes and returns them,
on machine types S and XS, timed round trip by round trip.

    python bench/payload.py [--mb 100] [--rounds 5] [--calls 3] [--types S,XS]
                            [--base BIN:SDK_DIR]

Each build runs in a child process of its own: its binary serves a server
started for the round, its SDK (the python/ directory beside the binary,
or SDK_DIR) is the caller's. With --base, the base build and this checkout's
run alternately (A, B, A, B...), so that a shared machine's load falls on
both alike. Prints, per build and machine type, the median round trip and
its MB/s (counting the argument once), and each round's figures; an XS call
killed for memory is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    """One round for one build: a server, then --calls timed round trips per
    machine type after one warm-up call (which starts the worker)."""
    sys.path.insert(0, str(REPO / "python" / "tests"))
    from conftest import Server  # the test suite's server runner

    import atoll

    payload = os.urandom(args.mb * 1_000_000)
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="atoll-payload-") as tmp:
        server = Server(Path(tmp) / "data", extra_args=["--log-level", "warn"])
        key_id, secret = server.create_key()
        server.start()
        os.environ.update(ATOLL_HOST=server.address, ATOLL_KEY_ID=key_id, ATOLL_KEY_SECRET=secret)
        try:
            for mt in args.types.split(","):

                @atoll.isolated(machine_type=mt, keep_alive=60)
                def echo(data):
                    return data

                try:
                    assert echo(b"warm") == b"warm"
                    times = []
                    for _ in range(args.calls):
                        start = time.perf_counter()
                        back = echo(payload)
                        times.append(time.perf_counter() - start)
                        assert back == payload
                        del back
                    out[mt] = times
                except atoll.AtollError as err:
                    out[mt] = f"{type(err).__name__}: {str(err)[:120]}"
        finally:
            server.stop()
    print(json.dumps(out))


def run_build(label: str, binary: str, sdk: str, args: argparse.Namespace) -> dict[str, object]:
    env = {**os.environ, "ATOLL_BIN": binary, "PYTHONPATH": sdk, "ATOLL_NO_AUTOSTART": "1"}
    cmd = [sys.executable, __file__, "--child", "--mb", str(args.mb), "--calls", str(args.calls), "--types", args.types]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--types", default="S,XS")
    parser.add_argument("--base", help="BIN:SDK_DIR of the build to compare with")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    builds = [("this", str(REPO / "bin" / "atoll"), str(REPO / "python"))]
    if args.base:
        binary, _, sdk = args.base.partition(":")
        builds.insert(0, ("base", binary, sdk or str(Path(binary).resolve().parents[1] / "python")))
    results: dict[str, dict[str, list]] = {label: {} for label, _, _ in builds}
    for r in range(args.rounds):
        for label, binary, sdk in builds:
            got = run_build(label, binary, sdk, args)
            print(f"round {r + 1} {label}: " + ", ".join(
                f"{k} " + (" ".join(f"{t * 1000:.0f}" for t in v) + " ms" if isinstance(v, list) else str(v))
                for k, v in got.items()), flush=True)
            for k, v in got.items():
                results[label].setdefault(k, []).append(v)
    print(f"\n{args.mb} MB round trip, load {os.getloadavg()[0]:.2f}")
    for label, by_type in results.items():
        for mt, rounds in by_type.items():
            times = [t for v in rounds if isinstance(v, list) for t in v]
            failed = [v for v in rounds if not isinstance(v, list)]
            if times:
                med = statistics.median(times)
                line = f"median {med * 1000:.0f} ms ({args.mb / med / 1000:.2f} GB/s), min {min(times) * 1000:.0f} ms"
            else:
                line = "no call succeeded"
            if failed:
                line += f"; {len(failed)} round(s) failed: {failed[0]}"
            print(f"  {label:5} {mt:3} {line}")


if __name__ == "__main__":
    main()
