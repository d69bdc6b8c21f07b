"""Hosts: where an isolated function runs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atoll._api import IsolatedFunction


class Host:
    """Where an isolated function runs; see ``cloud`` and ``local``."""

    def run(self, fn: IsolatedFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError


class CloudHost(Host):
    """An atoll server: ``address`` (host:port), else ``ATOLL_HOST``, else the
    server of the credentials file, else a local server, started on demand."""

    def __init__(self, address: str | None = None):
        self.address = address

    def target(self) -> str:
        from atoll import _autostart, _credentials

        return (
            self.address
            or os.environ.get("ATOLL_HOST")
            or _credentials.load_saved().get("host")
            or _autostart.local_address()
        )

    def run(self, fn: IsolatedFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from atoll import _autostart, _client

        target = self.target()
        return _client.run(target, fn, args, kwargs, autostart=_autostart.enabled(target))

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
