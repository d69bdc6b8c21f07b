"""host=local: runs isolated functions on this machine, without a server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atoll._api import IsolatedFunction


def run(fn: IsolatedFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    raise NotImplementedError("host=local is not available yet")
