"""atoll: run Python functions in isolated, reusable environments.

Example::

    from atoll import isolated

    @isolated(requirements=["pyjokes"], machine_type="M", keep_alive=30)
    def joke():
        import pyjokes
        return pyjokes.get_joke()

    print(joke())
"""

from atoll._api import IsolatedFunction, isolated
from atoll._call import Retries
from atoll._cached import cached
from atoll._credentials import CloudKeyCredentials
from atoll._errors import (
    AtollError,
    AuthenticationError,
    CallTimeoutError,
    CancelledError,
    EnvironmentBuildError,
    InvalidRequestError,
    MachineTypeError,
    NoCapacityError,
    OutOfMemoryError,
    PythonVersionError,
    QuotaExceededError,
    RemoteError,
    SecretNotFoundError,
    SerializationError,
    ServerUnavailableError,
    TimeoutError,
    VersionMismatchError,
    WorkerCrashedError,
)
from atoll._host import cloud, local
from atoll._sync import SyncResult, sync_dir

__all__ = [
    "AtollError",
    "AuthenticationError",
    "CallTimeoutError",
    "CancelledError",
    "CloudKeyCredentials",
    "EnvironmentBuildError",
    "InvalidRequestError",
    "IsolatedFunction",
    "MachineTypeError",
    "NoCapacityError",
    "OutOfMemoryError",
    "PythonVersionError",
    "QuotaExceededError",
    "RemoteError",
    "Retries",
    "SecretNotFoundError",
    "SerializationError",
    "VersionMismatchError",
    "ServerUnavailableError",
    "SyncResult",
    "TimeoutError",
    "WorkerCrashedError",
    "cached",
    "cloud",
    "isolated",
    "local",
    "sync_dir",
]
