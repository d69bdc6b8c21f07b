"""Prometheus /metrics on the dashboard port: scraped over plain HTTP on
loopback while calls, builds and syncs happen, the counters move."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import Server, free_port, wait_until

from atoll import CloudKeyCredentials, sync_dir
from atoll._host import CloudHost

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(url: str, token: str | None = None) -> dict[str, float]:
    """The samples of a scrape, by 'name{labels}' as the exposition writes them."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            out[m[1] + (m[2] or "")] = float(m[3])
    return out


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory):
    dashboard = f"127.0.0.1:{free_port()}"
    srv = Server(tmp_path_factory.mktemp("metrics") / "data", extra_args=["--dashboard", dashboard])
    key = srv.create_key("metered")
    srv.start()
    yield srv, key, f"http://{dashboard}/metrics"
    srv.stop()
    assert "panic" not in srv.log(), srv.log()


def run_calls(srv: Server, key: tuple[str, str], tmp_path: Path, source: str) -> str:
    script = tmp_path / "calls.py"
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, "ATOLL_HOST": srv.address, "ATOLL_KEY_ID": key[0], "ATOLL_KEY_SECRET": key[1]}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_counters_move_with_calls(metered, tmp_path):
    srv, key, url = metered
    before = scrape(url)
    out = run_calls(srv, key, tmp_path, """
        from atoll import isolated

        @isolated(requirements=["six"], keep_alive=30)
        def double(x):
            return 2 * x

        @isolated(keep_alive=0)
        def fails():
            raise ValueError("on purpose")

        print(double(1), double(2), double(3))
        try:
            fails()
        except ValueError:
            print("raised")
    """)
    assert out.split() == ["2", "4", "6", "raised"]
    after = scrape(url)

    def moved(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    xs = 'machine_type="XS"'
    assert moved(f'atoll_calls_total{{{xs},outcome="ok"}}') == 3
    assert moved(f'atoll_calls_total{{{xs},outcome="error"}}') == 1
    # double: one cold worker, then two warm calls; fails: a cold one.
    assert moved(f'atoll_worker_leases_total{{kind="cold",{xs}}}') == 2
    assert moved(f'atoll_worker_leases_total{{kind="warm",{xs}}}') == 2
    assert moved(f"atoll_call_cold_start_seconds_count{{{xs}}}") == 2
    assert moved(f"atoll_call_cold_start_seconds_sum{{{xs}}}") > 0
    assert moved(f"atoll_call_queue_seconds_count{{{xs}}}") == 4
    assert moved(f"atoll_call_run_seconds_count{{{xs}}}") == 4
    # Two environments were new to this server: ["six"] and [].
    assert moved('atoll_environment_builds_total{result="ok"}') == 2
    assert moved("atoll_environment_build_seconds_count") == 2
    assert after["atoll_environments"] >= 2 and after["atoll_environments_bytes"] > 0
    # double's worker stays warm: an idle XS worker, holding its CPU (fails'
    # worker, kept alive 0 s, is torn down after its answer).
    assert wait_until(lambda: scrape(url).get(f'atoll_workers{{{xs},state="busy"}}', 0) == 0, timeout=30)
    after = scrape(url)
    assert after.get(f'atoll_workers{{{xs},state="idle"}}') == 1
    assert after['atoll_capacity_cpus{kind="used"}'] == 0.25
    assert after['atoll_capacity_cpus{kind="total"}'] > 0
    assert after["atoll_queue_waiting"] == 0
    assert after["go_goroutines"] > 0  # the runtime's collectors are there too


def test_data_usage_per_account(metered, tmp_path):
    srv, key, url = metered
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.bin").write_bytes(os.urandom(123_456))
    (tree / "b.txt").write_bytes(b"x" * 1000)
    sync_dir(tree, "/data/metrics", host=CloudHost(srv.address), credentials=CloudKeyCredentials(*key))
    # /data is walked at most every 15 s, so the figure may lag that much.
    key_name = 'atoll_data_bytes{account="metered"}'
    assert wait_until(lambda: scrape(url).get(key_name) == 124_456, timeout=40, interval=1), scrape(url).get(key_name)
    samples = scrape(url)
    assert samples["atoll_data_quota_bytes"] == 10 * 2**30


def test_metrics_refuse_a_rebound_host_name(metered):
    _, _, url = metered
    req = urllib.request.Request(url, headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 421


def test_metrics_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-metrics-token\n")
    dashboard = f"127.0.0.1:{free_port()}"
    srv = Server(tmp_path / "data", extra_args=["--dashboard", dashboard, "--metrics-token-file", str(token_file)])
    srv.start()
    try:
        url = f"http://{dashboard}/metrics"
        for bad in (None, "wrong"):
            with pytest.raises(urllib.error.HTTPError) as err:
                scrape(url, bad)
            assert err.value.code == 401
        assert "atoll_queue_waiting" in scrape(url, "s3cret-metrics-token")
        assert srv.alive()
    finally:
        srv.stop()


def test_dashboard_refuses_a_public_address_without_tls(tmp_path):
    srv = Server(tmp_path / "data")
    done = subprocess.run(
        [*srv_command(srv), "--dashboard", f"0.0.0.0:{free_port()}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "--dashboard" in done.stderr and "without TLS" in done.stderr, done.stderr


def srv_command(srv: Server) -> list[str]:
    from conftest import atoll_binary

    return [atoll_binary(), "server", "--listen", srv.address, "--data-dir", str(srv.data_dir)]
