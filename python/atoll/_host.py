"""Hosts: where an isolated function runs."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from atoll import _autostart, _client, _credentials, _local
from atoll._call import Call


class Host(ABC):
    """Where an isolated function runs; see ``cloud`` and ``local``.

    A host receives each call as a ``Call`` value and returns its value
    (or raises its exception).
    """

    @abstractmethod
    def run(self, call: Call) -> Any:
        """Runs one call and returns its value, or raises its exception."""

    @abstractmethod
    def route(self) -> _client.Route:
        """Where this host's calls go and how they get there."""

    def stream(self, call: Call) -> Iterator[Any]:
        """Runs one call of a generator function, yielding its values."""
        r = self.route()
        return _client.stream(r.target, call, r.autostart, metadata=r.metadata, start=r.start)


class CloudHost(Host):
    """An atoll server: ``address`` (host:port), else ``ATOLL_HOST``, else the
    server of the credentials file, else a local server, started on demand.

    Example::

        @isolated(host=CloudHost("atoll.example.com:8443"))
        def my_function():
            return "hello world"
    """

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def target(self) -> str:
        """The address this host's calls go to."""
        return (
            self.address
            or os.environ.get("ATOLL_HOST")
            or _credentials.load_saved().get("host")
            or _autostart.local_address()
        )

    def run(self, call: Call) -> Any:
        """Runs call on the server at ``target()``, starting the local server if need be."""
        target = self.target()
        return _client.run(target, call, autostart=_autostart.enabled(target))

    def route(self) -> _client.Route:
        target = self.target()
        return _client.Route(target, autostart=_autostart.enabled(target))

    def __repr__(self) -> str:
        return f"CloudHost({self.address!r})" if self.address else "cloud"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CloudHost) and other.address == self.address

    def __hash__(self) -> int:
        return hash(("cloud", self.address))


class LocalHost(Host):
    """The caller's own machine, in a dedicated environment, with no server.

    Example::

        @isolated(host=local)
        def my_function():
            return "hello world"
    """

    def run(self, call: Call) -> Any:
        """Runs call in a warm local worker, or a new one."""
        return _local.run(call)

    def route(self) -> _client.Route:
        return _local.route()

    def __repr__(self) -> str:
        return "local"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalHost)

    def __hash__(self) -> int:
        return hash("local")


cloud = CloudHost()
local = LocalHost()
