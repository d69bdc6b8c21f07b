"""sync_dir: upload a local directory into the account's persistent /data.

A sync asks the server which files it already holds with the same size
(and their SHA-256), hashes only those here, and streams the content of the
others in chunks. The server writes each file under a temporary name,
checks its size and hash, and renames it into place, so a sync that breaks
off leaves no partial file behind.

Symbolic links are kept as links when they point inside the directory being
synced (an absolute link into the tree becomes a relative one); a link
pointing outside it is refused, since /data cannot hold what it points to.
Nothing on the server is deleted: files that exist remotely but not locally
stay.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from atoll import _channel, _credentials, _progress
from atoll._credentials import CloudKeyCredentials
from atoll._errors import AtollError, InvalidRequestError, from_rpc_error
from atoll._host import CloudHost, cloud
from atoll.v1 import storage_pb2 as pb
from atoll.v1 import storage_pb2_grpc as pb_grpc

DATA_MOUNT = "/data"
CHUNK_BYTES = 1 << 20

class SyncResult(str):
    """The remote directory (a ``str``, as returned by ``sync_dir``) with
    what the sync transferred: ``bytes_sent`` and ``files_sent`` count file
    content uploaded; ``files_unchanged`` the files the server already had.
    """

    bytes_sent: int
    files_sent: int
    files_unchanged: int

    def __new__(cls, remote_dir: str, *, bytes_sent: int, files_sent: int, files_unchanged: int) -> SyncResult:
        self = super().__new__(cls, remote_dir)
        self.bytes_sent = bytes_sent
        self.files_sent = files_sent
        self.files_unchanged = files_unchanged
        return self

    def __reduce__(self) -> tuple[type[str], tuple[str]]:  # pickles (into isolated functions) as a plain str
        return (str, (str(self),))


@dataclass
class _Entry:
    path: str  # relative, "/"-separated
    kind: pb.EntryKind
    local: str = ""
    size: int = 0
    mode: int = 0
    link_target: str = ""

    def proto(self) -> pb.SyncEntry:
        """The entry as the Storage API's manifest carries it."""
        return pb.SyncEntry(path=self.path, kind=self.kind, size=self.size, mode=self.mode, link_target=self.link_target)


def sync_dir(
    local_path: str | os.PathLike[str],
    remote_dir: str,
    *,
    host: CloudHost | None = None,
    credentials: CloudKeyCredentials | None = None,
) -> SyncResult:
    """Uploads the directory ``local_path`` to ``remote_dir`` in the
    persistent ``/data`` volume that every isolated function of the account
    sees, and returns the remote directory.

    ``remote_dir`` must be absolute and under ``/data``. Only files whose
    size or content differ from what is stored travel; the result tells how
    much did (``.bytes_sent``, ``.files_sent``, ``.files_unchanged``).

    Example::

        from atoll import isolated, sync_dir

        remote_dir = sync_dir("path/to/local/dir", "/data/remote_dir")

        @isolated()
        def listing():
            import os
            return os.listdir(remote_dir)
    """
    remote = _check_remote_dir(remote_dir)
    root = _check_local_dir(local_path)
    entries = _scan(root)
    host = host or cloud
    if not isinstance(host, CloudHost):
        raise InvalidRequestError(f"sync_dir uploads to an atoll server; {host!r} is not one (use cloud or CloudHost(...))")
    target = host.target()
    # As for calls: the credentials for this target, so that a key saved
    # for one server is never sent to another.
    metadata = _credentials.resolve(credentials, target)
    try:
        return _sync(target, metadata, remote, entries)
    except _PlanExpired:  # the server restarted between the two calls
        return _sync(target, metadata, remote, entries)


def _check_remote_dir(remote_dir: object) -> str:
    if isinstance(remote_dir, os.PathLike):
        remote_dir = os.fspath(remote_dir)
    if not isinstance(remote_dir, str):
        raise TypeError(f"remote_dir must be a str such as '/data/my_dir', not {type(remote_dir).__name__}")
    example = "an absolute path under /data, such as '/data/my_dir'"
    if not remote_dir.startswith("/"):
        raise InvalidRequestError(f"remote_dir {remote_dir!r} must be {example}")
    if ".." in remote_dir.split("/"):
        raise InvalidRequestError(f"remote_dir {remote_dir!r} must not contain '..'; it must be {example}")
    clean = posixpath.normpath(remote_dir)
    if clean != DATA_MOUNT and not clean.startswith(DATA_MOUNT + "/"):
        raise InvalidRequestError(f"remote_dir {remote_dir!r} must be {example}")
    return clean


def _check_local_dir(local_path: str | os.PathLike[str]) -> str:
    path = os.fspath(local_path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, f"sync_dir: local directory {path!r} does not exist", path)
    if not os.path.isdir(path):
        raise InvalidRequestError(f"sync_dir: {path!r} is not a directory; sync_dir uploads a whole directory")
    return os.path.abspath(path)


def _check_name(rel: str) -> None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(f"sync_dir: cannot sync {rel!r}: its name is not valid UTF-8") from None


def _scan(root: str) -> list[_Entry]:
    """The manifest of root: every directory, file and link beneath it,
    each directory before what it holds."""
    real_root = os.path.realpath(root)
    entries: list[_Entry] = []

    def walk(local_dir: str, rel_dir: str) -> None:
        with os.scandir(local_dir) as it:
            children = sorted(it, key=lambda d: d.name)
        for child in children:
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            _check_name(rel)
            st = child.stat(follow_symlinks=False)
            mode = stat.S_IMODE(st.st_mode) & 0o777
            if stat.S_ISLNK(st.st_mode):
                entries.append(_Entry(rel, pb.ENTRY_KIND_SYMLINK, link_target=_link_target(child.path, rel, real_root)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append(_Entry(rel, pb.ENTRY_KIND_DIRECTORY, mode=mode))
                walk(child.path, rel)
            elif stat.S_ISREG(st.st_mode):
                entries.append(_Entry(rel, pb.ENTRY_KIND_FILE, local=child.path, size=st.st_size, mode=mode))
            else:
                raise InvalidRequestError(f"sync_dir: cannot sync {child.path!r}: only files, directories and links can be synced")

    walk(root, "")
    return entries


def _link_target(link: str, rel: str, real_root: str) -> str:
    """The target to store for the link at local path `link`: where it
    finally points, relative to the link's directory. Refuses links that
    point outside the synced directory."""
    dest = os.path.realpath(link)
    if dest != real_root and not dest.startswith(real_root.rstrip(os.sep) + os.sep):
        raise InvalidRequestError(
            f"sync_dir: cannot sync the symlink {rel!r}: it points outside the directory being synced "
            f"(to {os.readlink(link)!r}); copy what it points to into the directory instead"
        )
    target = os.path.relpath(dest, os.path.realpath(os.path.dirname(link)))
    _check_name(target)
    return target.replace(os.sep, "/")


def _file_sha256(path: str) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.digest()


class _PlanExpired(Exception):
    pass


class _Sender:
    """The request stream of an upload: the pieces of the files, packed into
    messages of about CHUNK_BYTES (many small files share one; gRPC's cost
    per message dominates otherwise). An error reading a local file cancels
    the call, so that the server commits nothing, and is re-raised to the
    caller of sync_dir."""

    def __init__(
        self, sync_id: str, files: list[_Entry], indexes: list[int], bar: _progress.TransferBar | None = None
    ) -> None:
        self.sync_id = sync_id
        self.files = files
        self.indexes = indexes
        self.bar = bar
        self.bytes_sent = 0
        self.files_sent = 0
        self.error: Exception | None = None
        self.call: grpc.Future | None = None
        self.started = threading.Event()

    def __iter__(self) -> Iterator[pb.UploadRequest]:
        try:
            start: pb.UploadStart | None = pb.UploadStart(sync_id=self.sync_id, files=self.indexes)
            pieces: list[pb.FilePiece] = []
            size = 0
            for e in self.files:
                for piece in self._file(e):
                    pieces.append(piece)
                    size += len(piece.data)
                    if size >= CHUNK_BYTES:
                        yield pb.UploadRequest(start=start, pieces=pieces)
                        start, pieces, size = None, [], 0
            if start is not None or pieces:
                yield pb.UploadRequest(start=start, pieces=pieces)
        except Exception as err:  # noqa: BLE001 - handed to the caller's thread
            # (Not GeneratorExit: that is gRPC closing the stream because
            # the call already ended, as when the server refused it.)
            self.error = err
            self.started.wait()
            if self.call is not None:
                self.call.cancel()

    def _file(self, e: _Entry) -> Iterator[pb.FilePiece]:
        """The pieces of one file, CHUNK_BYTES at most each, the last one
        ending it with the SHA-256 of what was read."""
        h = hashlib.sha256()
        sent = 0
        with open(e.local, "rb") as f:
            data = f.read(CHUNK_BYTES)
            while True:
                following = f.read(CHUNK_BYTES) if data else b""
                sent += len(data)
                if sent > e.size:
                    break
                h.update(data)
                self.bytes_sent += len(data)
                if not following:
                    if sent == e.size:
                        self.files_sent += 1
                        self._progress()
                        yield pb.FilePiece(data=data, end=pb.FileEnd(sha256=h.digest()))
                        return
                    break
                self._progress()
                yield pb.FilePiece(data=data)
                data = following
        raise AtollError(f"sync_dir: {e.local!r} changed while it was being synced; sync again")

    def _progress(self) -> None:
        if self.bar is not None:
            self.bar.update(self.bytes_sent, self.files_sent)


def _sync(target: str, metadata: tuple[tuple[str, str], ...], remote: str, entries: list[_Entry]) -> SyncResult:
    stub = _channel.stub(target, pb_grpc.StorageStub)
    try:
        plan = stub.PlanSync(
            pb.PlanSyncRequest(remote_dir=remote, entries=[e.proto() for e in entries]), metadata=metadata
        )
    except grpc.RpcError as err:
        raise _sync_error(err, target) from None
    stored = {s.entry: s.sha256 for s in plan.stored}
    indexes = [
        i
        for i, e in enumerate(entries)
        if e.kind == pb.ENTRY_KIND_FILE and (i not in stored or _file_sha256(e.local) != stored[i])
    ]
    files = [entries[i] for i in indexes]
    # A bar of bytes and files on a terminal; nothing otherwise.
    line = _progress.StatusLine(sys.stderr) if _progress.is_terminal(sys.stderr) else None
    bar = None
    if line is not None:
        bar = _progress.TransferBar(line, f"sync_dir {remote}", sum(e.size for e in files), len(files))
        bar.update(0, 0, force=True)
    sender = _Sender(plan.sync_id, files, indexes, bar)
    call = stub.Upload.future(iter(sender), metadata=metadata)
    sender.call = call
    sender.started.set()
    try:
        response = call.result()
        if bar is not None:
            bar.update(sender.bytes_sent, sender.files_sent, force=True)
            line.done()
    except grpc.FutureCancelledError:
        if sender.error is not None:
            raise sender.error from None
        raise AtollError("sync_dir: the upload was cancelled") from None
    except grpc.RpcError as err:
        if sender.error is not None:
            raise sender.error from None
        if err.code() == grpc.StatusCode.NOT_FOUND:
            raise _PlanExpired() from None
        raise _sync_error(err, target) from None
    except BaseException:
        call.cancel()
        raise
    finally:
        if line is not None:
            line.done()
    if sender.error is not None:
        raise sender.error
    return SyncResult(
        response.remote_dir or plan.remote_dir,
        bytes_sent=sender.bytes_sent,
        files_sent=len(indexes),
        files_unchanged=int(response.files_unchanged),
    )


def _sync_error(err: grpc.RpcError, target: str) -> BaseException:
    """What sync_dir raises for a server error: InvalidRequestError (a
    ValueError) for a path or tree the server refused, else atoll's own
    exceptions (a quota over limit: QuotaExceededError)."""
    code = err.code() if hasattr(err, "code") else None
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return InvalidRequestError(f"sync_dir: {err.details()}")
    return from_rpc_error(err, target)
