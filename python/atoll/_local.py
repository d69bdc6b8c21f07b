"""host=local: runs isolated functions on this machine, without a server
or credentials.

Calls go, by the same Functions.Run RPC as host=cloud (through _client), to
this user's host=local supervisor: ``atoll local``, the Go server's own
services and scheduler on a unix socket in ``<cache>/run`` (mode 0700),
with plain local processes as workers and environments built with uv under
the user's cache directory. It admits only this user's processes (the
kernel's peer credentials), keeps each calling process's warm workers for
that process alone and tears them down when it exits. The first call starts
it; later processes reuse it; it stops after a while with no caller.

Nothing here knows the worker protocol or pool policy: keep_alive, reuse
and crash handling are the scheduler's, as on a server.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from typing import Any

from atoll import _binary, _client
from atoll._autostart import answers
from atoll._call import Call
from atoll._errors import AtollError, ServerUnavailableError

START_TIMEOUT = 60.0
# The supervisor's socket path must fit in sockaddr_un.sun_path.
_MAX_SOCKET_PATH = 107


def atoll_binary() -> str:
    """The atoll binary that runs the supervisor."""
    return _binary.find("host=local", AtollError)


def env_root() -> str:
    """Where local environments, their uv cache, the SDK and the
    supervisor's socket live: ``$XDG_CACHE_HOME/atoll``, else
    ``~/.cache/atoll``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore relative paths
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "atoll")


def socket_path() -> str:
    return os.path.join(env_root(), "run", "supervisor.sock")


def target() -> str:
    return "unix:" + socket_path()


def ensure(_target: str) -> None:
    """Starts the supervisor unless one answers; safe to call from several
    processes at once."""
    binary = atoll_binary()
    path = socket_path()
    if len(path.encode()) > _MAX_SOCKET_PATH:
        raise AtollError(f"host=local's socket path is too long for this system: {path}; set XDG_CACHE_HOME to a shorter directory")
    run_dir = os.path.dirname(path)
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(run_dir, "start.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(path) and answers(target()):
            return
        _start(binary, run_dir)


def _start(binary: str, run_dir: str) -> None:
    log_path = os.path.join(run_dir, "supervisor.log")
    with open(log_path, "ab") as log:
        # A session of its own: the terminal's Ctrl-C goes to the caller, and
        # the supervisor outlives it for the next one.
        proc = subprocess.Popen(
            [binary, "local", "--cache-dir", env_root()],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=_binary.tool_env(), cwd="/",
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if os.path.exists(socket_path()) and answers(target()):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    with open(log_path, errors="replace") as f:
        tail = f.read()[-2000:]
    raise ServerUnavailableError(f"the host=local supervisor did not start (log: {log_path}):\n{tail}")


def run(call: Call) -> Any:
    """Runs call through the supervisor and returns its value (or raises its
    exception); workers start in this process's working directory."""
    return _client.run(target(), call, metadata=(("x-atoll-working-dir", os.getcwd()),), start=ensure)


def route() -> _client.Route:
    """The supervisor, for calls other than run's: streams and maps."""
    return _client.Route(target(), metadata=(("x-atoll-working-dir", os.getcwd()),), start=ensure)
