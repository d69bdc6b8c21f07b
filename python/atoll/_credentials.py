"""Credentials the SDK presents to the server, and where it finds them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from atoll._errors import AuthenticationError


@dataclass(frozen=True)
class CloudKeyCredentials:
    """An API key: its id and its secret.

    Example::

        credentials = CloudKeyCredentials(key_id="ak_...", key_secret="...")

        @isolated(credentials=credentials)
        def my_function():
            return "hello world"
    """

    key_id: str
    key_secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not self.key_id:
            raise TypeError("CloudKeyCredentials needs key_id as a non-empty string")
        if not isinstance(self.key_secret, str) or not self.key_secret:
            raise TypeError("CloudKeyCredentials needs key_secret as a non-empty string")

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The gRPC metadata that presents this key to the server."""
        return (("x-atoll-key-id", self.key_id), ("x-atoll-key-secret", self.key_secret))


def credentials_path() -> Path:
    """The credentials file `atoll login` (or the local server's first start) writes."""
    return Path(_credentials_file())


# The credentials file's path for the (XDG_CONFIG_HOME, HOME) it was
# worked out from: every call looks it up, and building it costs more than
# the stat that follows.
_path_cache: tuple[tuple[str | None, str | None], str] | None = None


def _credentials_file() -> str:
    global _path_cache
    env = (os.environ.get("XDG_CONFIG_HOME"), os.environ.get("HOME"))
    cached = _path_cache
    if cached is not None and cached[0] == env:
        return cached[1]
    base = env[0] or os.path.join(os.path.expanduser("~"), ".config")
    path = os.path.join(base, "atoll", "credentials.json")
    _path_cache = (env, path)
    return path


_saved_cache: tuple[str, int, dict[str, str]] | None = None


def load_saved() -> dict[str, str]:
    """The credentials file's contents, or {} when there is none. Read again
    only when the file changes (one stat per call: `atoll login` in another
    process is seen by the next call)."""
    global _saved_cache
    path = _credentials_file()
    try:
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return {}
    except OSError:
        mtime = -1
    cached = _saved_cache
    if cached is not None and cached[0] == path and cached[1] == mtime:
        return cached[2]
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AuthenticationError(f"cannot read the credentials file {credentials_path()}: {exc}") from exc
    data = data if isinstance(data, dict) else {}
    _saved_cache = (path, mtime, data)
    return data


def save(host: str, key_id: str, key_secret: str) -> Path:
    """Writes the credentials file, readable by its owner only."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"host": host, "key_id": key_id, "key_secret": key_secret}, f, indent=2)
    os.replace(tmp, path)
    return path


def resolve(explicit: CloudKeyCredentials | None, target: str | None = None) -> tuple[tuple[str, str], ...]:
    """The metadata to send to target: explicit credentials; else a worker's
    own token (inside a worker); else ATOLL_KEY_ID/ATOLL_KEY_SECRET; else the
    credentials file, if it is for this server (or any, without target)."""
    if explicit is not None:
        return explicit.metadata()
    token = os.environ.get("ATOLL_WORKER_TOKEN") or _worker_token_file()
    if token:
        return (("x-atoll-worker-token", token),)
    key_id, secret = os.environ.get("ATOLL_KEY_ID"), os.environ.get("ATOLL_KEY_SECRET")
    if key_id and secret:
        return _key_metadata(key_id, secret)
    saved = load_saved()
    if saved.get("key_id") and saved.get("key_secret") and (target is None or saved.get("host", target) == target):
        key_id, secret = saved["key_id"], saved["key_secret"]
        if isinstance(key_id, str) and isinstance(secret, str):
            return _key_metadata(key_id, secret)
        return CloudKeyCredentials(key_id, secret).metadata()  # raises, naming the field
    return ()


def _key_metadata(key_id: str, secret: str) -> tuple[tuple[str, str], ...]:
    """CloudKeyCredentials(key_id, secret).metadata(), for two non-empty
    strings, without making the value on every call."""
    return (("x-atoll-key-id", key_id), ("x-atoll-key-secret", secret))


def _worker_token_file() -> str | None:
    """A worker pod's token: Kubernetes delivers it as a file of a Secret
    volume, named by ATOLL_WORKER_TOKEN_FILE, never as a variable."""
    path = os.environ.get("ATOLL_WORKER_TOKEN_FILE")
    if not path:
        return None
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None
