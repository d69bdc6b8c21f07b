"""Secrets: set with the CLI, visible to the function as environment
variables, and nowhere else: not in the server's log, the database file,
`atoll runs` or `atoll logs`."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid

import pytest

import atoll
from atoll import isolated
from conftest import atoll_binary, wait_until


def cli(server, *args, check=True):
    out = subprocess.run([atoll_binary(), *args], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "ATOLL_HOST": server.address})
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_secret_reaches_the_worker_and_nothing_else(server):
    value = "s3cr3t-" + uuid.uuid4().hex
    cli(server, "secrets", "set", "db", f"DB_PASSWORD={value}", "DB_USER=atoll")
    listed = cli(server, "secrets", "list").stdout
    assert "db" in listed and "DB_PASSWORD" in listed and value not in listed

    @isolated(secrets=["db"], keep_alive=5)
    def read_secret():
        import os

        return os.environ["DB_PASSWORD"], os.environ["DB_USER"]

    assert read_secret() == (value, "atoll")

    # Only for the calls that name it: the same warm worker, another
    # function without secrets, sees nothing.
    @isolated(keep_alive=5)
    def no_secret():
        import os

        return os.environ.get("DB_PASSWORD")

    assert no_secret() is None

    from test_timeouts import runs_of

    assert wait_until(lambda: any(r.outcome == "ok" for r in runs_of(server, "read_secret")), timeout=5)
    run_id = runs_of(server, "read_secret")[0].id
    assert value not in cli(server, "runs").stdout
    assert value not in cli(server, "logs", run_id).stdout
    assert value not in server.log()
    for name in os.listdir(server.data_dir):
        path = server.data_dir / name
        if path.is_file():
            assert value.encode() not in path.read_bytes(), f"{name} holds the secret in the clear"
    assert (server.data_dir / "state.db").exists()
    key = server.data_dir / "secrets.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_missing_secret_fails_before_anything_runs(server):
    @isolated(secrets=["no-such-secret"])
    def f():
        return 1

    with pytest.raises(atoll.SecretNotFoundError, match="atoll secrets set no-such-secret"):
        f()


def test_secrets_rm(server):
    cli(server, "secrets", "set", "temp", "A=1")
    cli(server, "secrets", "rm", "temp")
    assert "temp" not in cli(server, "secrets", "list").stdout
    out = cli(server, "secrets", "rm", "temp", check=False)
    assert out.returncode != 0 and "no secret" in out.stderr


def test_bad_secret_names_are_refused(server):
    out = cli(server, "secrets", "set", "ok", "1BAD=x", check=False)
    assert out.returncode != 0 and "environment variable name" in out.stderr
    out = cli(server, "secrets", "set", "ok", "novalue", check=False)
    assert out.returncode != 0 and "KEY=VALUE" in out.stderr
