"""The platform wheel is everything a Python user needs: built from this
checkout (sdist first, then the wheel from the sdist, as `python -m build`
does), installed into a fresh venv on a PATH without Go, it puts `atoll` on
the venv's PATH and runs the quick-start example through the zero-setup
local server."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from conftest import REPO, free_port

LINUX_TAGS = {"x86_64": "manylinux_2_17_x86_64", "aarch64": "manylinux_2_17_aarch64"}


def test_wheel_carries_the_binary_and_runs_the_quickstart_without_go(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO / "python")],
                   check=True, capture_output=True, timeout=600)
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert "atoll-0.1.0/gosrc/go.mod" in names and "atoll-0.1.0/gosrc/cmd/atoll/main.go" in names
    (wheel,) = dist.glob("*.whl")
    assert LINUX_TAGS[platform.machine()] in wheel.name and "musllinux_1_1" in wheel.name, wheel.name
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo("atoll-0.1.0.data/scripts/atoll")
        assert info.external_attr >> 16 & 0o111, "the binary must be executable"
        assert "Root-Is-Purelib: false" in zf.read("atoll-0.1.0.dist-info/WHEEL").decode()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, binary = venv / "bin" / "python", venv / "bin" / "atoll"
    home = tmp_path / "home"
    path = f"{venv / 'bin'}:/usr/bin:/bin"
    assert shutil.which("go", path=path) is None, "go must not be reachable from the installed wheel's PATH"
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("ATOLL_", "XDG_", "PYTHON", "GO")) and k not in ("VIRTUAL_ENV",)
    }
    env.update(PATH=path, HOME=str(home), ATOLL_LOCAL_ADDRESS=f"127.0.0.1:{free_port()}", PYTHONUNBUFFERED="1")
    # PYTHONPATH is gone too: the SDK of this checkout on it would satisfy
    # pip and stand in for the wheel's.
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
                   env=env, check=True, timeout=600)
    assert os.access(binary, os.X_OK)
    try:
        found = subprocess.run(
            [str(python), "-c",
             "import atoll, atoll._binary as b; print(atoll.__file__); print(b.find('test', RuntimeError))"],
            env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
        ).stdout.split()
        assert found[0].startswith(str(venv)), f"the SDK must come from the wheel, not {found[0]}"
        assert Path(found[1]) == binary
        run = subprocess.run([str(python), str(REPO / "examples" / "quickstart.py")],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr + _server_log(home)
        assert "hello from the worker" in run.stdout and "output of a child process streams too" in run.stdout
        assert "(same warm worker)" in run.stdout
        joke = next(line for line in run.stdout.splitlines() if line.startswith("a joke from a worker"))
        assert len(joke) > len("a joke from a worker that has pyjokes installed: ")
        assert (home / ".local" / "share" / "atoll" / "server" / "state.db").exists()  # the zero-setup server's
    finally:
        subprocess.run([str(binary), "server", "stop"], env=env, capture_output=True, timeout=30)
    assert subprocess.run([str(binary), "server", "status"], env=env, capture_output=True).returncode == 3


def test_cross_built_wheel_is_tagged_for_its_target(tmp_path):
    """scripts/build-wheels.sh's way: GOOS/GOARCH pick the binary's target,
    and the wheel's tags follow it, not the build machine."""
    env = {**os.environ, "GOOS": "darwin", "GOARCH": "arm64"}
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path),
                    str(REPO / "python")], env=env, check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name == "atoll-0.1.0-py3-none-macosx_12_0_arm64.whl"
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("atoll-0.1.0.dist-info/WHEEL").decode().splitlines()[-1] == "Tag: py3-none-macosx_12_0_arm64"
        header = zf.open("atoll-0.1.0.data/scripts/atoll").read(8)
    # A 64-bit Mach-O executable (magic 0xfeedfacf) for CPU_TYPE_ARM64 (0x0100000c), little-endian.
    assert header == bytes.fromhex("cffaedfe0c000001"), header.hex()


def _server_log(home: Path) -> str:
    log = home / ".local" / "share" / "atoll" / "server" / "server.log"
    return "\nserver log:\n" + log.read_text(errors="replace")[-3000:] if log.exists() else ""
