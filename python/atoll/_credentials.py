"""Credentials the SDK presents to the server."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


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
        return (("x-atoll-key-id", self.key_id), ("x-atoll-key-secret", self.key_secret))


def resolve(explicit: CloudKeyCredentials | None) -> tuple[tuple[str, str], ...]:
    """The metadata to send: explicit credentials, else the environment."""
    if explicit is not None:
        return explicit.metadata()
    token = os.environ.get("ATOLL_WORKER_TOKEN")
    if token:
        return (("x-atoll-worker-token", token),)
    key_id, secret = os.environ.get("ATOLL_KEY_ID"), os.environ.get("ATOLL_KEY_SECRET")
    if key_id and secret:
        return CloudKeyCredentials(key_id, secret).metadata()
    return ()
