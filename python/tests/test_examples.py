"""The reference documents' examples, with only the import line changed, run
against a real server and print what the documents say."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    "script, expected",
    [
        ("reference/hello_world.py", ["Hello World"]),
        ("reference/keep_alive.py", ["2"]),
        ("reference/cached_function.py", ["The result is: Hello, World!"] * 2),
    ],
)
def test_reference_example(run_script, script, expected):
    proc = run_script((EXAMPLES / script).read_text())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == expected


def test_quickstart(run_script):
    proc = run_script((EXAMPLES / "quickstart.py").read_text())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("hello from the worker (pid ")
    assert "output of a child process streams too" in lines
    assert lines[-1].startswith("caller pid")
