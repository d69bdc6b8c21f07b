"""The examples of the README's section on many calls, futures, timeouts,
retries, generators and secrets, run as written against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import atoll_binary

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Many calls, futures, timeouts, retries, generators and secrets"

EXPECTED = [
    ["332833500", "[1.0, ZeroDivisionError('division by zero'), 0.25]", "[9, 16]"],
    ["[0, 2, 4]", "[10, 12]"],
    ["timed out: True"],
    ["ok on a retry"],
    ["3", "2", "1"],
    ["hello world"],
]


def examples() -> list[str]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def test_every_example_has_its_expected_output():
    assert len(examples()) == len(EXPECTED)


@pytest.mark.parametrize("number", range(len(EXPECTED)))
def test_readme_example(server, tmp_path, number):
    env = {**os.environ, "ATOLL_HOST": server.address, "PYTHONUNBUFFERED": "1"}
    source = examples()[number]
    if "secrets=" in source:
        subprocess.run([atoll_binary(), "secrets", "set", "greeting", "GREETING_WORD=hello"], check=True, env=env,
                       capture_output=True, timeout=60)
    script = tmp_path / "example.py"
    script.write_text(source)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == EXPECTED[number], proc.stderr
