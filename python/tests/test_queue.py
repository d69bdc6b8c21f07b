"""A call waiting for capacity: the caller is told once, with its place in
line, and `atoll workers` / `atoll runs` show the queued work."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import atoll
from atoll import isolated
from conftest import Server, atoll_binary, wait_until


def test_queued_call_is_visible(tmp_path):
    config = tmp_path / "atoll.yaml"
    config.write_text("capacity:\n  cpus: 0.25\n")  # room for one XS worker
    srv = Server(tmp_path / "data", ["--config", str(config), "--queue-timeout", "60s"])
    key_id, secret = srv.create_key()
    srv.start()
    env = {**os.environ, "ATOLL_HOST": srv.address, "ATOLL_KEY_ID": key_id, "ATOLL_KEY_SECRET": secret}
    try:
        host, creds = atoll._host.CloudHost(srv.address), atoll.CloudKeyCredentials(key_id, secret)
        hold = isolated(keep_alive=0, host=host, credentials=creds)(lambda: __import__("time").sleep(8))
        holder = threading.Thread(target=hold)
        holder.start()
        script = tmp_path / "queued.py"
        script.write_text(
            "from atoll import isolated\n"
            "@isolated(keep_alive=0)\n"
            "def waits():\n    return 'ran'\n"
            "print(waits())\n"
        )
        try:
            assert wait_until(lambda: "busy" in _cli(env, "workers"), timeout=60)
            proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            assert wait_until(lambda: "1 call(s) queued" in _cli(env, "workers"), timeout=30), _cli(env, "workers")
            assert wait_until(lambda: "queued" in _cli(env, "runs"), timeout=10), _cli(env, "runs")
            out, err = proc.communicate(timeout=60)
        finally:
            holder.join()
        assert out.strip() == "ran"
        lines = [line for line in err.splitlines() if line.startswith("atoll:")]
        assert lines == [
            "atoll: waiting for capacity for machine type XS (0.25 CPU, 256 MiB)",
            "atoll: place 1 in line: the host's capacity for this machine type is in use; the call starts when a worker ends",
        ], err
    finally:
        srv.stop()


def _cli(env, *args):
    return subprocess.run([atoll_binary(), *args], capture_output=True, text=True, timeout=30, env=env).stdout


def test_queue_time_is_not_counted_in_the_timeout(tmp_path):
    """timeout= bounds the function's own run, not its wait for room."""
    config = tmp_path / "atoll.yaml"
    config.write_text("capacity:\n  cpus: 0.25\n")
    srv = Server(tmp_path / "data", ["--config", str(config), "--queue-timeout", "60s"])
    creds = atoll.CloudKeyCredentials(*srv.create_key())
    srv.start()
    try:
        host = atoll._host.CloudHost(srv.address)
        hold = isolated(keep_alive=0, host=host, credentials=creds)(lambda: __import__("time").sleep(4))
        quick = isolated(keep_alive=0, timeout=2, host=host, credentials=creds)(lambda: "in time")
        assert quick() == "in time"  # the environment is built
        holder = threading.Thread(target=hold)
        holder.start()
        time.sleep(1)
        try:
            assert quick() == "in time"
        finally:
            holder.join()
    finally:
        srv.stop()
