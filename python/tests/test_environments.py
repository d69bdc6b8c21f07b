"""Environments: uv-built venvs per requirement set, cached and shared,
built once under concurrency, failures reported and retried, interrupted
builds never reused, Python version checks, clean pip freeze, pruning."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import atoll
from atoll import CloudKeyCredentials, isolated
from atoll._host import CloudHost
from conftest import Server, atoll_binary, wait_until


def builds_of(server: Server, requirement: str) -> int:
    """How many builds of an environment with this requirement the server began."""
    return sum(1 for line in server.log().splitlines() if 'msg="building environment"' in line and requirement in line)


def test_requirements_are_installed_only_remotely(server):
    assert importlib.util.find_spec("pyjokes") is None

    @isolated(requirements=["pyjokes"])
    def joke():
        import pyjokes

        return pyjokes.get_joke()

    assert len(joke()) > 10


def test_second_call_builds_nothing(server, capfd):
    @isolated(requirements=["six==1.16.0"], keep_alive=0)
    def version():
        import six

        return six.__version__

    assert version() == "1.16.0"
    first_err = capfd.readouterr().err
    assert "atoll: " in first_err and "six==1.16.0" in first_err  # build output reached the caller
    assert version() == "1.16.0"  # a new worker, the same environment
    assert capfd.readouterr().err == ""
    assert builds_of(server, "six==1.16.0") == 1


def test_identical_requirements_share_one_environment(server):
    def prefix():
        import sys

        return sys.prefix

    a = isolated(requirements=["six==1.16.0", "pyjokes"], keep_alive=0)(prefix)
    b = isolated(requirements=["PyJokes", " six == 1.16.0"], keep_alive=0)(lambda: prefix())
    assert a() == b()


def test_concurrent_first_calls_build_once(server):
    @isolated(requirements=["six==1.15.0"], keep_alive=0)
    def version(_):
        import six

        return six.__version__

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(version, range(3))) == ["1.15.0"] * 3
    assert builds_of(server, "six==1.15.0") == 1


@pytest.mark.parametrize(
    "requirement, uv_says",
    [
        ("no-such-package-xyz-atoll", "not found in the package registry"),
        ("numpy==0.0.1", "there is no version of numpy==0.0.1"),
    ],
)
def test_failed_build_reports_uv_and_is_retried(server, requirement, uv_says):
    f = isolated(requirements=[requirement])(lambda: 1)
    for attempt in (1, 2):
        with pytest.raises(atoll.EnvironmentBuildError, match=uv_says):
            f()
        assert builds_of(server, requirement) == attempt  # not cached: tried again
    assert server.alive()


def test_invalid_requirement_is_refused_before_building(server):
    f = isolated(requirements=["--index-url=http://example.invalid/simple six"])(lambda: 1)
    with pytest.raises(atoll.EnvironmentBuildError, match="looks like an option"):
        f()


def test_paths_on_the_server_are_refused(server):
    f = isolated(requirements=["secrets @ file:///etc"])(lambda: 1)
    with pytest.raises(atoll.EnvironmentBuildError, match="names a path on the server.*--allow-local-requirements"):
        f()


def test_python_version_mismatch_names_the_versions(server):
    from dataclasses import replace

    from atoll import _client
    from atoll._call import EnvironmentSpec

    call = replace(isolated()(lambda: 1)._call((), {}), environment=EnvironmentSpec("3.99"))
    with pytest.raises(atoll.PythonVersionError, match=r"cannot run Python 3\.99.*it has: .*3\.11"):
        _client.run(server.address, call)


def test_pip_freeze_shows_only_the_users_packages(server):
    @isolated(requirements=["pyjokes"], keep_alive=0)
    def freeze():
        import subprocess

        return subprocess.run(["pip", "freeze"], capture_output=True, text=True, check=True).stdout.split()

    packages = freeze()
    assert [p.split("==")[0].lower() for p in packages] == ["pyjokes"], packages


def test_user_pin_of_a_runner_package_still_works(server):
    @isolated(requirements=["cloudpickle==2.2.1"], keep_alive=0)
    def which():
        import importlib.metadata
        import subprocess

        freeze = subprocess.run(["pip", "freeze"], capture_output=True, text=True, check=True).stdout.split()
        return importlib.metadata.version("cloudpickle"), freeze

    installed, freeze = which()
    assert installed == "2.2.1"
    assert freeze == ["cloudpickle==2.2.1"]


SLOW_PACKAGE_SETUP = """
import time
from setuptools import setup
time.sleep(60)
setup(name="slowpkg", version="1.0", py_modules=[])
"""


def test_interrupted_build_is_never_used(tmp_path):
    """A server killed mid-build leaves a partial build behind; the next
    server removes it and builds afresh."""
    pkg = tmp_path / "slowpkg"
    pkg.mkdir()
    (pkg / "setup.py").write_text(SLOW_PACKAGE_SETUP)
    srv = Server(tmp_path / "data", ["--allow-local-requirements"])
    creds = CloudKeyCredentials(*srv.create_key())
    srv.start()
    host = CloudHost(srv.address)
    f = isolated(requirements=["six==1.16.0", f"slowpkg @ file://{pkg}"], host=host, credentials=creds)(lambda: 1)
    errors = []
    caller = threading.Thread(target=lambda: errors.append(pytest.raises(atoll.AtollError, f)))
    caller.start()
    assert wait_until(lambda: "Building slowpkg" in srv.log() or "slowpkg" in srv.log(), timeout=60)
    time.sleep(1)
    tmp_builds = tmp_path / "data" / "envs" / "tmp"
    assert wait_until(lambda: tmp_builds.exists() and any(tmp_builds.iterdir()), timeout=30)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    caller.join(timeout=60)
    for child in subprocess.run(["pgrep", "-f", "slowpkg"], capture_output=True, text=True).stdout.split():
        os.kill(int(child), signal.SIGKILL)  # uv's build of slowpkg outlived its server

    envs = tmp_path / "data" / "envs" / "envs"
    assert not envs.exists() or not any(envs.iterdir())  # nothing half-built became an environment

    srv2 = Server(tmp_path / "data").start()
    try:
        assert not any(tmp_builds.iterdir())  # the leftover is gone
        g = isolated(requirements=["six==1.16.0"], host=CloudHost(srv2.address), credentials=creds)(lambda: "fresh")
        assert g() == "fresh"
    finally:
        srv2.stop()


def test_envs_prune_keeps_environments_in_use(tmp_path):
    srv = Server(tmp_path / "data")
    creds = CloudKeyCredentials(*srv.create_key())
    srv.start()
    host = CloudHost(srv.address)
    try:
        held = isolated(requirements=["six==1.16.0"], keep_alive=60, host=host, credentials=creds)(lambda: 1)
        idle = isolated(requirements=["pyjokes"], keep_alive=0, host=host, credentials=creds)(lambda: 2)
        assert held() == 1 and idle() == 2

        def envs_list() -> str:
            return subprocess.run([atoll_binary(), "envs", "list", "--data-dir", str(srv.data_dir)],
                                  capture_output=True, text=True, check=True).stdout

        assert "six==1.16.0" in envs_list() and "pyjokes" in envs_list()
        assert wait_until(lambda: "pyjokes" in envs_list() and any(
            line.split()[-1] == "0" for line in envs_list().splitlines() if "pyjokes" in line))
        out = subprocess.run([atoll_binary(), "envs", "prune", "--max-bytes", "1", "--data-dir", str(srv.data_dir)],
                             capture_output=True, text=True, check=True).stdout
        assert "Removed 1 environments" in out and "pyjokes" in out
        listing = envs_list()
        assert "six==1.16.0" in listing and "pyjokes" not in listing
        assert held() == 1  # the warm worker's environment is intact
    finally:
        srv.stop()
