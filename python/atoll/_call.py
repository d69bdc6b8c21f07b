"""One call of an isolated function, as a value: what a host needs to run
it, already serialized. ``IsolatedFunction`` builds it; hosts consume it
and never reach back into the function."""

from __future__ import annotations

from dataclasses import dataclass, field

from atoll._credentials import CloudKeyCredentials
from atoll.v1 import atoll_pb2 as pb


@dataclass(frozen=True)
class EnvironmentSpec:
    """The environment a call runs in: the caller's Python major.minor
    ("3.11") and pip requirement strings."""

    python_version: str
    requirements: tuple[str, ...] = ()

    def proto(self) -> pb.Environment:
        """The environment as the Functions API sends it."""
        return pb.Environment(python_version=self.python_version, requirements=list(self.requirements))


@dataclass(frozen=True)
class Call:
    """One call: the function and its arguments pickled, where it runs and
    for how long its worker stays warm.

    ``function_name`` names the function in errors and in the server's
    records; ``credentials`` are the caller's explicit ones, if any (else
    the host finds them in the environment).
    """

    function_name: str
    function: bytes = field(repr=False)
    arguments: bytes = field(repr=False)
    environment: EnvironmentSpec
    machine_type: str
    keep_alive: float
    credentials: CloudKeyCredentials | None = None

    def request(self) -> pb.RunRequest:
        """The call as the Functions API's Run request."""
        return pb.RunRequest(
            function_name=self.function_name,
            function=self.function,
            arguments=self.arguments,
            environment=self.environment.proto(),
            machine_type=self.machine_type,
            keep_alive_seconds=float(self.keep_alive),
        )
