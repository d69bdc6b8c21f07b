"""Workers that dial back: with --worker-transport connect, the local
launcher starts `atoll worker --connect ADDR --token-file F`, as cluster
launchers do, and calls run over the connection the worker opened."""

from __future__ import annotations

import os

import pytest

import atoll
from atoll import isolated
from conftest import Server


def agent_command_line() -> str:
    """The command line of the agent that runs this function: the runner's
    parent, in or out of a sandbox."""
    import os

    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def identity() -> str:
    import builtins
    import uuid

    if not hasattr(builtins, "_atoll_dialback_identity"):
        builtins._atoll_dialback_identity = uuid.uuid4().hex
    return builtins._atoll_dialback_identity


@pytest.mark.parametrize(
    ("sandbox", "network", "listener"),
    [
        # Workers with a network of their own dial back through a unix
        # socket mounted into them; on the host's network, over loopback.
        ("auto", "isolated", "unix:"),
        ("process", "isolated", "unix:"),
        ("auto", "host", "127.0.0.1:"),
    ],
)
def test_calls_run_through_a_worker_that_dialed_back(tmp_path, capfd, sandbox, network, listener):
    srv = Server(tmp_path / "data", ["--sandbox", sandbox, "--network", network, "--worker-transport", "connect"])
    creds = atoll.CloudKeyCredentials(*srv.create_key())
    srv.start()
    try:
        host = atoll._host.CloudHost(srv.address)

        @isolated(host=host, credentials=creds, keep_alive=30)
        def call(x):
            print("hello from the worker")
            return agent_command_line(), identity(), x * 2

        cmdline, first, doubled = call(21)
        assert doubled == 42
        assert f"--connect {listener}" in cmdline and "--token-file" in cmdline, cmdline
        assert "hello from the worker" in capfd.readouterr().out
        # The warm worker serves the next call over the same connection.
        _, second, _ = call(1)
        assert second == first

        with pytest.raises(atoll.WorkerCrashedError) as info:
            isolated(host=host, credentials=creds)(lambda: __import__("os")._exit(5))()
        assert info.value.exit_code == 5
        assert "listening for workers" in srv.log()
        if sandbox == "auto" and os.environ.get("ATOLL_REQUIRE_SANDBOX") == "1":
            # The token file must reach the worker inside its container too.
            assert "sandbox=process" not in srv.log(), srv.log()
        assert "does not expect" not in srv.log()
    finally:
        srv.stop()
    assert "panic" not in srv.log(), srv.log()
