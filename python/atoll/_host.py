"""Hosts: where an isolated function runs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atoll._api import IsolatedFunction

DEFAULT_HOST = "127.0.0.1:28655"


class Host:
    """Where an isolated function runs; see ``cloud`` and ``local``."""

    def run(self, fn: IsolatedFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError


class CloudHost(Host):
    """An atoll server: ``address`` (host:port), else ``ATOLL_HOST``, else the
    local default."""

    def __init__(self, address: str | None = None):
        self.address = address

    def target(self) -> str:
        return self.address or os.environ.get("ATOLL_HOST") or DEFAULT_HOST

    def run(self, fn: IsolatedFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from atoll import _client

        return _client.run(self.target(), fn, args, kwargs)

    def __repr__(self) -> str:
        return f"CloudHost({self.address!r})" if self.address else "cloud"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CloudHost) and other.address == self.address

    def __hash__(self) -> int:
        return hash(("cloud", self.address))


class LocalHost(Host):
    """The caller's own machine, in a dedicated environment, with no server."""

    def run(self, fn: IsolatedFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from atoll import _local

        return _local.run(fn, args, kwargs)

    def __repr__(self) -> str:
        return "local"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalHost)

    def __hash__(self) -> int:
        return hash("local")


cloud = CloudHost()
local = LocalHost()
