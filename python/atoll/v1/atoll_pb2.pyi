from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_QUEUED: _ClassVar[Phase]
    PHASE_BUILDING_ENVIRONMENT: _ClassVar[Phase]
    PHASE_STARTING_WORKER: _ClassVar[Phase]
    PHASE_RUNNING: _ClassVar[Phase]

class Stream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_UNSPECIFIED: _ClassVar[Stream]
    STREAM_STDOUT: _ClassVar[Stream]
    STREAM_STDERR: _ClassVar[Stream]
    STREAM_SYSTEM: _ClassVar[Stream]

class FailureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_KIND_UNSPECIFIED: _ClassVar[FailureKind]
    FAILURE_KIND_INTERNAL: _ClassVar[FailureKind]
    FAILURE_KIND_INVALID_REQUEST: _ClassVar[FailureKind]
    FAILURE_KIND_UNKNOWN_MACHINE_TYPE: _ClassVar[FailureKind]
    FAILURE_KIND_ENVIRONMENT_BUILD: _ClassVar[FailureKind]
    FAILURE_KIND_PYTHON_UNAVAILABLE: _ClassVar[FailureKind]
    FAILURE_KIND_WORKER_CRASHED: _ClassVar[FailureKind]
    FAILURE_KIND_OUT_OF_MEMORY: _ClassVar[FailureKind]
    FAILURE_KIND_NO_CAPACITY: _ClassVar[FailureKind]
    FAILURE_KIND_SERIALIZATION: _ClassVar[FailureKind]
    FAILURE_KIND_CANCELLED: _ClassVar[FailureKind]
    FAILURE_KIND_TIMEOUT: _ClassVar[FailureKind]
    FAILURE_KIND_SECRET_NOT_FOUND: _ClassVar[FailureKind]
PHASE_UNSPECIFIED: Phase
PHASE_QUEUED: Phase
PHASE_BUILDING_ENVIRONMENT: Phase
PHASE_STARTING_WORKER: Phase
PHASE_RUNNING: Phase
STREAM_UNSPECIFIED: Stream
STREAM_STDOUT: Stream
STREAM_STDERR: Stream
STREAM_SYSTEM: Stream
FAILURE_KIND_UNSPECIFIED: FailureKind
FAILURE_KIND_INTERNAL: FailureKind
FAILURE_KIND_INVALID_REQUEST: FailureKind
FAILURE_KIND_UNKNOWN_MACHINE_TYPE: FailureKind
FAILURE_KIND_ENVIRONMENT_BUILD: FailureKind
FAILURE_KIND_PYTHON_UNAVAILABLE: FailureKind
FAILURE_KIND_WORKER_CRASHED: FailureKind
FAILURE_KIND_OUT_OF_MEMORY: FailureKind
FAILURE_KIND_NO_CAPACITY: FailureKind
FAILURE_KIND_SERIALIZATION: FailureKind
FAILURE_KIND_CANCELLED: FailureKind
FAILURE_KIND_TIMEOUT: FailureKind
FAILURE_KIND_SECRET_NOT_FOUND: FailureKind

class MapRequest(_message.Message):
    __slots__ = ("start", "item", "items")
    START_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    start: RunRequest
    item: MapItem
    items: MapItems
    def __init__(self, start: _Optional[_Union[RunRequest, _Mapping]] = ..., item: _Optional[_Union[MapItem, _Mapping]] = ..., items: _Optional[_Union[MapItems, _Mapping]] = ...) -> None: ...

class MapItems(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[MapItem]
    def __init__(self, items: _Optional[_Iterable[_Union[MapItem, _Mapping]]] = ...) -> None: ...

class MapItem(_message.Message):
    __slots__ = ("index", "arguments")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    index: int
    arguments: bytes
    def __init__(self, index: _Optional[int] = ..., arguments: _Optional[bytes] = ...) -> None: ...

class MapEvent(_message.Message):
    __slots__ = ("index", "status", "output", "result", "failure", "batch")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    index: int
    status: Status
    output: Output
    result: Result
    failure: Failure
    batch: _containers.RepeatedCompositeFieldContainer[MapEvent]
    def __init__(self, index: _Optional[int] = ..., status: _Optional[_Union[Status, _Mapping]] = ..., output: _Optional[_Union[Output, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., batch: _Optional[_Iterable[_Union[MapEvent, _Mapping]]] = ...) -> None: ...

class CancelRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class CancelRunResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetSecretRequest(_message.Message):
    __slots__ = ("name", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SetSecretResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSecretsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SecretInfo(_message.Message):
    __slots__ = ("name", "keys", "updated_unix_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    updated_unix_ms: int
    def __init__(self, name: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., updated_unix_ms: _Optional[int] = ...) -> None: ...

class ListSecretsResponse(_message.Message):
    __slots__ = ("secrets",)
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    secrets: _containers.RepeatedCompositeFieldContainer[SecretInfo]
    def __init__(self, secrets: _Optional[_Iterable[_Union[SecretInfo, _Mapping]]] = ...) -> None: ...

class DeleteSecretRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteSecretResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("id", "function_name", "machine_type", "environment_key", "queued_unix_ms", "started_unix_ms", "finished_unix_ms", "outcome", "exit_status", "worker_id", "call_id", "attempt")
    ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_KEY_FIELD_NUMBER: _ClassVar[int]
    QUEUED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EXIT_STATUS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    id: str
    function_name: str
    machine_type: str
    environment_key: str
    queued_unix_ms: int
    started_unix_ms: int
    finished_unix_ms: int
    outcome: str
    exit_status: int
    worker_id: str
    call_id: str
    attempt: int
    def __init__(self, id: _Optional[str] = ..., function_name: _Optional[str] = ..., machine_type: _Optional[str] = ..., environment_key: _Optional[str] = ..., queued_unix_ms: _Optional[int] = ..., started_unix_ms: _Optional[int] = ..., finished_unix_ms: _Optional[int] = ..., outcome: _Optional[str] = ..., exit_status: _Optional[int] = ..., worker_id: _Optional[str] = ..., call_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ...) -> None: ...

class GetRunLogsRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("stream", "at_unix_ms", "data")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    at_unix_ms: int
    data: bytes
    def __init__(self, stream: _Optional[_Union[Stream, str]] = ..., at_unix_ms: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class GetRunLogsResponse(_message.Message):
    __slots__ = ("run", "lines")
    RUN_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    run: RunInfo
    lines: _containers.RepeatedCompositeFieldContainer[LogLine]
    def __init__(self, run: _Optional[_Union[RunInfo, _Mapping]] = ..., lines: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("version", "sandbox", "sandbox_warning", "account", "capacity", "used", "waiting", "machine_types")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_WARNING_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPES_FIELD_NUMBER: _ClassVar[int]
    version: str
    sandbox: str
    sandbox_warning: str
    account: str
    capacity: str
    used: str
    waiting: int
    machine_types: _containers.RepeatedCompositeFieldContainer[MachineType]
    def __init__(self, version: _Optional[str] = ..., sandbox: _Optional[str] = ..., sandbox_warning: _Optional[str] = ..., account: _Optional[str] = ..., capacity: _Optional[str] = ..., used: _Optional[str] = ..., waiting: _Optional[int] = ..., machine_types: _Optional[_Iterable[_Union[MachineType, _Mapping]]] = ...) -> None: ...

class MachineType(_message.Message):
    __slots__ = ("name", "cpus", "memory_bytes", "gpus", "gpu_model")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    cpus: float
    memory_bytes: int
    gpus: int
    gpu_model: str
    def __init__(self, name: _Optional[str] = ..., cpus: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., gpus: _Optional[int] = ..., gpu_model: _Optional[str] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("id", "account", "function_name", "machine_type", "environment_key", "idle", "started_unix_ms", "last_used_unix_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_KEY_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    account: str
    function_name: str
    machine_type: str
    environment_key: str
    idle: bool
    started_unix_ms: int
    last_used_unix_ms: int
    def __init__(self, id: _Optional[str] = ..., account: _Optional[str] = ..., function_name: _Optional[str] = ..., machine_type: _Optional[str] = ..., environment_key: _Optional[str] = ..., idle: _Optional[bool] = ..., started_unix_ms: _Optional[int] = ..., last_used_unix_ms: _Optional[int] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("function_name", "function", "arguments", "environment", "machine_type", "keep_alive_seconds", "timeout_seconds", "retries", "secrets", "max_concurrency", "needs_cloudpickle")
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    NEEDS_CLOUDPICKLE_FIELD_NUMBER: _ClassVar[int]
    function_name: str
    function: bytes
    arguments: bytes
    environment: Environment
    machine_type: str
    keep_alive_seconds: float
    timeout_seconds: float
    retries: RetryPolicy
    secrets: _containers.RepeatedScalarFieldContainer[str]
    max_concurrency: int
    needs_cloudpickle: bool
    def __init__(self, function_name: _Optional[str] = ..., function: _Optional[bytes] = ..., arguments: _Optional[bytes] = ..., environment: _Optional[_Union[Environment, _Mapping]] = ..., machine_type: _Optional[str] = ..., keep_alive_seconds: _Optional[float] = ..., timeout_seconds: _Optional[float] = ..., retries: _Optional[_Union[RetryPolicy, _Mapping]] = ..., secrets: _Optional[_Iterable[str]] = ..., max_concurrency: _Optional[int] = ..., needs_cloudpickle: _Optional[bool] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_retries", "backoff_seconds", "retry_exceptions", "retry_out_of_memory")
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETRY_EXCEPTIONS_FIELD_NUMBER: _ClassVar[int]
    RETRY_OUT_OF_MEMORY_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    backoff_seconds: float
    retry_exceptions: bool
    retry_out_of_memory: bool
    def __init__(self, max_retries: _Optional[int] = ..., backoff_seconds: _Optional[float] = ..., retry_exceptions: _Optional[bool] = ..., retry_out_of_memory: _Optional[bool] = ...) -> None: ...

class Environment(_message.Message):
    __slots__ = ("python_version", "requirements")
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    python_version: str
    requirements: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, python_version: _Optional[str] = ..., requirements: _Optional[_Iterable[str]] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("status", "output", "result", "failure", "yielded")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    YIELDED_FIELD_NUMBER: _ClassVar[int]
    status: Status
    output: Output
    result: Result
    failure: Failure
    yielded: bytes
    def __init__(self, status: _Optional[_Union[Status, _Mapping]] = ..., output: _Optional[_Union[Output, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., yielded: _Optional[bytes] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("phase", "message", "run_id", "worker_id", "queue_position")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    phase: Phase
    message: str
    run_id: str
    worker_id: str
    queue_position: int
    def __init__(self, phase: _Optional[_Union[Phase, str]] = ..., message: _Optional[str] = ..., run_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., queue_position: _Optional[int] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("stream", "data")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    data: bytes
    def __init__(self, stream: _Optional[_Union[Stream, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("value", "exception")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXCEPTION_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    exception: RemoteException
    def __init__(self, value: _Optional[bytes] = ..., exception: _Optional[_Union[RemoteException, _Mapping]] = ...) -> None: ...

class RemoteException(_message.Message):
    __slots__ = ("pickled", "type_name", "message", "traceback")
    PICKLED_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    pickled: bytes
    type_name: str
    message: str
    traceback: str
    def __init__(self, pickled: _Optional[bytes] = ..., type_name: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("kind", "message", "exit_code", "signal", "machine_type")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    kind: FailureKind
    message: str
    exit_code: int
    signal: int
    machine_type: str
    def __init__(self, kind: _Optional[_Union[FailureKind, str]] = ..., message: _Optional[str] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., machine_type: _Optional[str] = ...) -> None: ...

class WorkerCall(_message.Message):
    __slots__ = ("call_id", "function_size", "arguments_size", "env")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_SIZE_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_SIZE_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    function_size: int
    arguments_size: int
    env: _containers.ScalarMap[str, str]
    def __init__(self, call_id: _Optional[str] = ..., function_size: _Optional[int] = ..., arguments_size: _Optional[int] = ..., env: _Optional[_Mapping[str, str]] = ...) -> None: ...

class WorkerEvent(_message.Message):
    __slots__ = ("ready", "output", "result", "failure", "value", "yielded")
    READY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    YIELDED_FIELD_NUMBER: _ClassVar[int]
    ready: WorkerReady
    output: Output
    result: Result
    failure: Failure
    value: WorkerValue
    yielded: WorkerValue
    def __init__(self, ready: _Optional[_Union[WorkerReady, _Mapping]] = ..., output: _Optional[_Union[Output, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., value: _Optional[_Union[WorkerValue, _Mapping]] = ..., yielded: _Optional[_Union[WorkerValue, _Mapping]] = ...) -> None: ...

class WorkerValue(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class WorkerReady(_message.Message):
    __slots__ = ("runner_pid",)
    RUNNER_PID_FIELD_NUMBER: _ClassVar[int]
    runner_pid: int
    def __init__(self, runner_pid: _Optional[int] = ...) -> None: ...
