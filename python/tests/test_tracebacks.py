"""Remote tracebacks name the caller's own files, lines and source, whatever
cloudpickle version the caller has: atoll keeps each shipped code object's
filename itself (cloudpickle 3.1.3 and later replace it with
"<dynamic-code>"). The oldest supported cloudpickle still works against the
runtime's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cloudpickle
import pytest

from conftest import REPO

SCRIPT = textwrap.dedent(
    """\
    import sys

    import cloudpickle

    from atoll import isolated


    def helper(x):
        return int(x)


    @isolated()
    def fail(x):
        value = helper(x)
        return value


    @isolated()
    def returns_a_function():
        return lambda y: y * 3


    print("cloudpickle", cloudpickle.__version__)
    print("triple", returns_a_function()(5))
    try:
        fail("not a number")
    except ValueError as exc:
        print("ERROR", type(exc).__name__)
        print(exc.__cause__)
    """
)


def check_traceback(out: str, script: Path) -> None:
    # Both frames of the caller's script, with their lines and source...
    assert f'File "{script}", line 14, in fail' in out, out
    assert "\n    value = helper(x)\n" in out, out
    assert f'File "{script}", line 9, in helper' in out, out
    assert "\n    return int(x)\n" in out, out
    assert "ValueError: invalid literal for int() with base 10: 'not a number'" in out, out
    assert "<dynamic-code>" not in out, out
    assert "_runner.py" not in out, out


def test_traceback_names_the_callers_script_with_the_newest_cloudpickle(run_script, tmp_path):
    major, minor, patch = (int(p) for p in cloudpickle.__version__.split(".")[:3])
    # The version that first rewrote co_filename, or newer, is what the
    # caller runs with here (python/requirements.lock).
    assert (major, minor, patch) >= (3, 1, 3), cloudpickle.__version__
    result = run_script(SCRIPT)
    assert result.returncode == 0, result.stderr
    assert f"cloudpickle {cloudpickle.__version__}" in result.stdout
    assert "triple 15" in result.stdout
    check_traceback(result.stdout, tmp_path / "script.py")


def test_frames_of_installed_code_keep_their_real_paths(server):
    from atoll import isolated

    @isolated()
    def parse():
        import json

        return json.loads("{")

    with pytest.raises(ValueError) as info:
        parse()
    tb = str(info.value.__cause__)
    assert f'File "{__file__}", line ' in tb
    # The standard library's frames name the worker's own json/decoder.py,
    # with the source line the worker read there.
    assert os.path.join("json", "decoder.py") in tb, tb
    assert "obj, end = self.scan_once(s, idx)" in tb, tb


# The oldest cloudpickle the SDK supports (pyproject.toml: >=3.0), pinned
# with its hashes so that this test installs exactly it.
OLDEST_CLOUDPICKLE = """\
cloudpickle==3.0.0 \\
    --hash=sha256:246ee7d0c295602a036e86369c77fecda4ab17b506496730f2f576d9016fd9c7 \\
    --hash=sha256:996d9a482c6fb4f33c1a35335cf8afd065d2a56e973270364840712d9131a882
"""


@pytest.fixture(scope="module")
def oldest_cloudpickle_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter that sees everything this one does (the SDK, grpcio),
    but cloudpickle 3.0.0 in place of the locked version."""
    root = tmp_path_factory.mktemp("cloudpickle-3.0")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    lock = root / "oldest.lock"
    lock.write_text(OLDEST_CLOUDPICKLE)
    python = str(venv / "bin" / "python")
    subprocess.run(
        ["uv", "pip", "install", "--python", python, "--require-hashes", "--no-deps", "-r", str(lock)],
        check=True,
        capture_output=True,
    )
    return python


def test_oldest_supported_cloudpickle_caller_against_the_runtimes(server, oldest_cloudpickle_python, tmp_path):
    script = tmp_path / "skew.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "ATOLL_HOST": server.address, "PYTHONPATH": str(REPO / "python")}
    result = subprocess.run(
        [oldest_cloudpickle_python, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    # The caller pickled with 3.0.0; the worker loaded with the runtime's
    # locked version, and its return value came back through 3.0.0.
    assert "cloudpickle 3.0.0" in result.stdout, result.stdout
    assert "triple 15" in result.stdout, result.stdout
    check_traceback(result.stdout, script)
