from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_KIND_UNSPECIFIED: _ClassVar[EntryKind]
    ENTRY_KIND_FILE: _ClassVar[EntryKind]
    ENTRY_KIND_DIRECTORY: _ClassVar[EntryKind]
    ENTRY_KIND_SYMLINK: _ClassVar[EntryKind]
ENTRY_KIND_UNSPECIFIED: EntryKind
ENTRY_KIND_FILE: EntryKind
ENTRY_KIND_DIRECTORY: EntryKind
ENTRY_KIND_SYMLINK: EntryKind

class SyncEntry(_message.Message):
    __slots__ = ("path", "kind", "size", "mode", "link_target")
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LINK_TARGET_FIELD_NUMBER: _ClassVar[int]
    path: str
    kind: EntryKind
    size: int
    mode: int
    link_target: str
    def __init__(self, path: _Optional[str] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., size: _Optional[int] = ..., mode: _Optional[int] = ..., link_target: _Optional[str] = ...) -> None: ...

class PlanSyncRequest(_message.Message):
    __slots__ = ("remote_dir", "entries")
    REMOTE_DIR_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    remote_dir: str
    entries: _containers.RepeatedCompositeFieldContainer[SyncEntry]
    def __init__(self, remote_dir: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[SyncEntry, _Mapping]]] = ...) -> None: ...

class StoredFile(_message.Message):
    __slots__ = ("entry", "sha256")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    entry: int
    sha256: bytes
    def __init__(self, entry: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class PlanSyncResponse(_message.Message):
    __slots__ = ("sync_id", "remote_dir", "stored")
    SYNC_ID_FIELD_NUMBER: _ClassVar[int]
    REMOTE_DIR_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    sync_id: str
    remote_dir: str
    stored: _containers.RepeatedCompositeFieldContainer[StoredFile]
    def __init__(self, sync_id: _Optional[str] = ..., remote_dir: _Optional[str] = ..., stored: _Optional[_Iterable[_Union[StoredFile, _Mapping]]] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("start", "pieces")
    START_FIELD_NUMBER: _ClassVar[int]
    PIECES_FIELD_NUMBER: _ClassVar[int]
    start: UploadStart
    pieces: _containers.RepeatedCompositeFieldContainer[FilePiece]
    def __init__(self, start: _Optional[_Union[UploadStart, _Mapping]] = ..., pieces: _Optional[_Iterable[_Union[FilePiece, _Mapping]]] = ...) -> None: ...

class UploadStart(_message.Message):
    __slots__ = ("sync_id", "files")
    SYNC_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    sync_id: str
    files: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sync_id: _Optional[str] = ..., files: _Optional[_Iterable[int]] = ...) -> None: ...

class FilePiece(_message.Message):
    __slots__ = ("data", "end")
    DATA_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    end: FileEnd
    def __init__(self, data: _Optional[bytes] = ..., end: _Optional[_Union[FileEnd, _Mapping]] = ...) -> None: ...

class FileEnd(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: bytes
    def __init__(self, sha256: _Optional[bytes] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("remote_dir", "files_written", "bytes_written", "files_unchanged")
    REMOTE_DIR_FIELD_NUMBER: _ClassVar[int]
    FILES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    FILES_UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    remote_dir: str
    files_written: int
    bytes_written: int
    files_unchanged: int
    def __init__(self, remote_dir: _Optional[str] = ..., files_written: _Optional[int] = ..., bytes_written: _Optional[int] = ..., files_unchanged: _Optional[int] = ...) -> None: ...
