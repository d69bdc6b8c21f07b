"""The reference documents' examples, with only the import line changed, run
against a real server and print what the documents say.

The examples name machine types a small CI host cannot hold (L: 4 CPUs,
GPU: an A100), so their server declares more capacity than it detects and
defines GPU without a GPU: the operator's catalog is configurable, the
examples are not."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Server, atoll_binary

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def examples_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    config = root / "atoll.yaml"
    config.write_text(
        "capacity:\n  cpus: 32\n  memory: 512GiB\n"
        "machine_types:\n  - {name: GPU, cpus: 1, memory: 2GiB, gpus: 0}\n"
    )
    srv = Server(root / "data", ["--config", str(config)])
    key_id, secret = srv.create_key()
    srv.start()
    # host=local examples get a cache (and so a supervisor) of their own,
    # stopped with the server.
    cache = root / "cache"
    srv.env = {
        **os.environ, "ATOLL_HOST": srv.address, "ATOLL_KEY_ID": key_id, "ATOLL_KEY_SECRET": secret,
        "PYTHONUNBUFFERED": "1", "XDG_CACHE_HOME": str(cache),
    }
    yield srv
    subprocess.run([atoll_binary(), "local", "stop", "--cache-dir", str(cache / "atoll")], check=True, timeout=60)
    srv.stop()


def run_example(server, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)], env=server.env, capture_output=True, text=True, timeout=300
    )


def test_pyjokes_is_not_installed_here():
    assert importlib.util.find_spec("pyjokes") is None
    assert importlib.util.find_spec("cowsay") is None


@pytest.mark.parametrize(
    "script, expected",
    [
        ("reference/hello_world.py", ["Hello World"]),
        ("reference/keep_alive.py", ["2"]),
        ("reference/cached_function.py", ["The result is: Hello, World!"] * 2),
        ("reference/credentials.py", ["hello world"]),
    ],
)
def test_reference_example_output(examples_server, script, expected):
    proc = run_example(examples_server, script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == expected


@pytest.mark.parametrize(
    "script, jokes",
    [
        ("reference/requirements.py", 1),
        ("reference/machine_type.py", 2),
        ("reference/keep_alive_joke.py", 2),
        ("reference/local_development.py", 3),
    ],
)
def test_reference_examples_tell_jokes(examples_server, script, jokes):
    proc = run_example(examples_server, script)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == jokes, proc.stdout
    assert all(len(line) > 10 for line in lines), lines


def test_nested_calls_example(examples_server):
    proc = run_example(examples_server, "reference/nested_calls.py")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "^__^" in out  # the cow
    assert "|\\_/|" in out  # the fox
    assert out.count(" _____") == 2, out  # two speech bubbles, a joke in each


def test_quickstart(examples_server):
    proc = run_example(examples_server, "quickstart.py")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("hello from the worker (pid ")
    assert "output of a child process streams too" in lines
    assert lines[-2].startswith("a joke from a worker that has pyjokes installed: ")
    assert lines[-1].startswith("caller pid")
