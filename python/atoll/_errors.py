"""atoll's exceptions: one root class, and the table that maps what the
server reports to them."""

from __future__ import annotations

import builtins

import grpc

from atoll.v1 import atoll_pb2 as pb


class AtollError(Exception):
    """Root of every error atoll itself raises."""


class SerializationError(AtollError):
    """A function, argument or return value could not be pickled, or could
    not be unpickled on the other side; the message names it."""


class VersionMismatchError(SerializationError):
    """A pickle refers to a distribution the receiving side lacks or has in
    another version, and it cannot be loaded there.

    ``distribution`` names it; ``local_version`` is the caller's version and
    ``remote_version`` the worker's (None where that side lacks it);
    ``culprit`` says what refers to it ("argument 0 of f", "the return value
    of f"). The message says how to fix it.
    """

    def __init__(
        self,
        message: str,
        *,
        distribution: str = "",
        local_version: str | None = None,
        remote_version: str | None = None,
        culprit: str = "",
    ):
        super().__init__(message)
        self.distribution = distribution
        self.local_version = local_version
        self.remote_version = remote_version
        self.culprit = culprit

    def __reduce__(self):  # keyword-only fields survive pickling
        return _version_mismatch, (str(self), self.distribution, self.local_version, self.remote_version, self.culprit)


def _version_mismatch(
    message: str, distribution: str, local_version: str | None, remote_version: str | None, culprit: str
) -> VersionMismatchError:
    return VersionMismatchError(
        message,
        distribution=distribution,
        local_version=local_version,
        remote_version=remote_version,
        culprit=culprit,
    )


class RemoteError(AtollError):
    """The function raised an exception that cannot be rebuilt here.

    ``type_name``, ``remote_message`` and ``remote_traceback`` carry what the
    worker reported; ``reason`` says why it could not be rebuilt where that
    is known (a distribution this interpreter lacks or has in another
    version, with the fix).
    """

    def __init__(self, type_name: str, message: str, traceback: str, reason: str = "") -> None:
        why = f"\n\n{reason}" if reason else ""
        super().__init__(
            f"{type_name}: {message}{why}\n\nRemote traceback:\n{traceback}".rstrip()
        )
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = traceback
        self.reason = reason


class WorkerCrashedError(AtollError):
    """The worker died before returning (os._exit, a segfault, a signal).

    ``exit_code`` is its exit status (-1 when a signal ended it) and
    ``signal`` the signal number (0 if none).
    """

    def __init__(self, message: str, exit_code: int = -1, signal: int = 0) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.signal = signal


class OutOfMemoryError(WorkerCrashedError):
    """The worker was killed for exceeding its machine type's memory."""

    def __init__(self, message: str, exit_code: int = -1, signal: int = 0, machine_type: str = "") -> None:
        super().__init__(message, exit_code, signal)
        self.machine_type = machine_type


class EnvironmentBuildError(AtollError):
    """The environment could not be built; the message carries the installer's error."""


class PythonVersionError(EnvironmentBuildError):
    """The server cannot provide the caller's Python version."""


class MachineTypeError(AtollError, ValueError):
    """The machine type is unknown to the server or can never fit it."""


class InvalidRequestError(AtollError, ValueError):
    """The request was refused as malformed or outside a documented bound
    (docs/limits.md); the message names the field or path at fault."""


class NoCapacityError(AtollError):
    """No capacity freed up for the call within the server's queue timeout."""


class AuthenticationError(AtollError):
    """The server refused the credentials."""


class ServerUnavailableError(AtollError):
    """The atoll server could not be reached."""


class CallTimeoutError(AtollError, builtins.TimeoutError):
    """The call did not finish in time: the function ran past its
    ``timeout=`` (its worker was killed), or the server did not answer in
    time. Also a builtin ``TimeoutError``; ``atoll.TimeoutError`` is the
    same class."""


TimeoutError = CallTimeoutError  # noqa: A001 - atoll.TimeoutError, as the API names it


class CancelledError(AtollError):
    """The call was cancelled: ``atoll cancel RUN_ID``, or ``cancel()`` on
    its future."""


class SecretNotFoundError(AtollError):
    """The function names a secret its account does not have; nothing ran.
    Create it with ``atoll secrets set NAME KEY=VALUE``."""


class QuotaExceededError(AtollError):
    """An account's storage quota would be exceeded."""


class ProtocolError(AtollError):
    """The server sent something this SDK does not understand."""


_FAILURES: dict[int, type[AtollError]] = {
    pb.FAILURE_KIND_INVALID_REQUEST: ProtocolError,
    pb.FAILURE_KIND_UNKNOWN_MACHINE_TYPE: MachineTypeError,
    pb.FAILURE_KIND_ENVIRONMENT_BUILD: EnvironmentBuildError,
    pb.FAILURE_KIND_PYTHON_UNAVAILABLE: PythonVersionError,
    pb.FAILURE_KIND_NO_CAPACITY: NoCapacityError,
    pb.FAILURE_KIND_SERIALIZATION: SerializationError,
    pb.FAILURE_KIND_CANCELLED: CancelledError,
    pb.FAILURE_KIND_TIMEOUT: CallTimeoutError,
    pb.FAILURE_KIND_SECRET_NOT_FOUND: SecretNotFoundError,
    pb.FAILURE_KIND_INTERNAL: AtollError,
}

_STATUS_CODES: dict[grpc.StatusCode, type[AtollError]] = {
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
    grpc.StatusCode.UNAVAILABLE: ServerUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: CallTimeoutError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QuotaExceededError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
}


def from_runner(fields: dict) -> AtollError:
    """atoll's own error that the in-worker runner reported as plain data
    (it does not import atoll): {"atoll_error": class name, "message", ...}."""
    message = str(fields.get("message", ""))
    if fields.get("atoll_error") == "VersionMismatchError":
        return VersionMismatchError(
            message,
            distribution=str(fields.get("distribution", "")),
            local_version=fields.get("local_version"),
            remote_version=fields.get("remote_version"),
            culprit=str(fields.get("culprit", "")),
        )
    return SerializationError(message)


def from_failure(failure: pb.Failure) -> AtollError:
    """Turns the server's Failure event into the exception to raise."""
    kind = failure.kind
    if kind == pb.FAILURE_KIND_OUT_OF_MEMORY:
        return OutOfMemoryError(failure.message, failure.exit_code, failure.signal, failure.machine_type)
    if kind == pb.FAILURE_KIND_WORKER_CRASHED:
        return WorkerCrashedError(failure.message, failure.exit_code, failure.signal)
    return _FAILURES.get(kind, AtollError)(failure.message)


def from_rpc_error(err: grpc.RpcError, target: str) -> AtollError:
    """Turns a gRPC error into the exception to raise."""
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    cls = _STATUS_CODES.get(code, AtollError)
    if cls is ServerUnavailableError:
        return cls(
            f"could not reach the atoll server at {target}: {details}. "
            "Start one with `atoll server`, or point ATOLL_HOST at a running server."
        )
    if cls is AtollError:
        name = code.name if code is not None else "UNKNOWN"
        return cls(f"the atoll server at {target} failed the call ({name}): {details}")
    return cls(details)
