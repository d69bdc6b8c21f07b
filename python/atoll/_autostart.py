"""Zero-setup local use: when no server is configured and none answers on
the local address, start `atoll server` in the background with a data
directory under the user's data directory, create a key for it, and save
that key in the credentials file. Later processes find the running server.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import grpc

from atoll import _binary, _credentials
from atoll._errors import ServerUnavailableError

LOCAL_ADDRESS = "127.0.0.1:28655"
START_TIMEOUT = 60.0


def local_address() -> str:
    """The address of the auto-started local server (ATOLL_LOCAL_ADDRESS
    overrides the default)."""
    return os.environ.get("ATOLL_LOCAL_ADDRESS") or LOCAL_ADDRESS


def enabled(target: str) -> bool:
    """Whether a call to target may start the local server: target is its
    address and ATOLL_NO_AUTOSTART is not set."""
    return target == local_address() and not os.environ.get("ATOLL_NO_AUTOSTART")


def find_binary() -> str:
    """The atoll binary that runs the local server."""
    return _binary.find(
        f"no atoll server answers at {local_address()} (and ATOLL_HOST names none); starting one", ServerUnavailableError
    )


def data_dir() -> Path:
    """The local server's data directory, under the user's data directory."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "atoll" / "server"


def answers(target: str, timeout: float = 0.5) -> bool:
    """Whether a server accepts connections at target within timeout seconds."""
    # A probe channel of its own, never cached: the local server listens on
    # loopback in plain text, and a channel that found no server is not
    # worth keeping.
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def ensure(target: str) -> None:
    """Starts the local server at target unless one answers; safe to call
    from several processes at once."""
    import fcntl

    binary = find_binary()
    root = data_dir()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(root.parent / "autostart.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if answers(target):
            return
        fresh = not (root / "state.db").exists()
        saved = _credentials.load_saved()
        if fresh or saved.get("host") != target or not saved.get("key_id"):
            _create_key(binary, root, target)
        _start(binary, root, target)


def _create_key(binary: str, root: Path, target: str) -> None:
    import json

    proc = subprocess.run(
        [binary, "keys", "create", "--data-dir", str(root), "--label", "local (created by the SDK)", "--json"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise ServerUnavailableError(f"could not create a key for the local atoll server: {proc.stderr.strip()}")
    key = json.loads(proc.stdout)
    _credentials.save(target, key["key_id"], key["key_secret"])


def _start(binary: str, root: Path, target: str) -> None:
    log_path = root / "server.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [binary, "server", "--data-dir", str(root), "--listen", target],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=_binary.tool_env(),
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if answers(target):
            return
        if proc.poll() is not None:
            break
    tail = log_path.read_text(errors="replace")[-2000:]
    raise ServerUnavailableError(f"the local atoll server did not start (log: {log_path}):\n{tail}")
