"""Finding the atoll binary, which local workers and the zero-setup local
server need."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

BIN_ENV = "ATOLL_BIN"

# An SDK installed from a checkout (pip install -e python/) finds the binary
# that `make build` or scripts/setup.sh left in the checkout's bin/.
_CHECKOUT_BINARY = Path(__file__).resolve().parents[2] / "bin" / "atoll"


def find(purpose: str, error: type[Exception]) -> str:
    """The atoll binary: ATOLL_BIN, else the one installed beside this SDK
    (the platform wheel puts it in this Python's scripts directory, which a
    venv's python run without activating does not have on PATH), else
    `atoll` on PATH, else the checkout's bin/atoll. error (with a message
    saying what it was needed for) when there is none."""
    path = os.environ.get(BIN_ENV)
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise error(f"{BIN_ENV}={path!r} is not an executable file; point it at the atoll binary")
        return path
    found = shutil.which("atoll", path=sysconfig.get_path("scripts")) or shutil.which("atoll")
    if found:
        return found
    if os.access(_CHECKOUT_BINARY, os.X_OK):
        return str(_CHECKOUT_BINARY)
    raise error(
        f"{purpose} needs the atoll binary: set {BIN_ENV} to its path, or put `atoll` on PATH "
        "(`pip install` a platform wheel of atoll, which carries it, or build it with "
        "`go build -o bin/atoll ./cmd/atoll`)"
    )


def tool_env() -> dict[str, str]:
    """The environment for running the binary: this one, with this Python's
    scripts directory first on PATH, where pip installed uv (which builds
    the environments)."""
    env = dict(os.environ)
    scripts = sysconfig.get_path("scripts")
    env["PATH"] = scripts + os.pathsep + env.get("PATH", "")
    return env
