"""The in-worker runner: receives calls from the atoll worker agent and runs them.

It imports only the standard library, cloudpickle and its sibling
_pickling.py (loaded by path, not through the atoll package), so user
environments never need atoll's own dependencies.

The runner's own packages (the runtime directory: cloudpickle, and for
nested calls grpcio, protobuf and their dependencies) stay out of the
user's view: the directory is not on sys.path, so importlib.metadata,
pip and `import grpc` see the environment's packages alone. The runner
imports its cloudpickle from there when it first needs it (a call of
plain data to a function pickled by value does not: see _pickling, whose
equivalents of cloudpickle's few helpers for functions spare a cold
start the import) and keeps it in sys.modules
only while it pickles or unpickles (see _OwnModules), so a user's own
cloudpickle, of any version, is the one the function imports. Importing
atoll (a nested call) asks for the rest: then the runtime directory is
appended to sys.path, behind the environment's packages, and the
runner's cloudpickle stays in sys.modules. The agent starts it with the call
channel on fd 3 (agent -> runner) and the result channel on fd 4
(runner -> agent); fds 1 and 2 are pipes the agent streams to the caller.
A large bytes in a value is not even copied into the result pipe: its
pages are spliced into it (vmsplice), and the bytes object, which cannot
change, is kept until the next call, by which time the agent and the
server have taken every page (the server answers the caller, and so sends
the next call, only once it has the whole value).

Frames on both channels: a 4-byte big-endian length, then one type byte,
then the payload (length counts the type byte and the payload). A call's
arguments are unpickled as they are read from the pipe (a large bytes or
bytearray is read straight into the object it becomes), and a value is
written from its own memory with os.writev: a value crosses the runner
once, and is never held twice.
  agent -> runner  b"V": environment variables for the next call only, as
                         u32-length-prefixed fields: name, value, ...
                   b"C": u32 len(function) + function + arguments, each a
                         payload of _pickling (manifest, then pickle)
  runner -> agent  b"Y": ready (empty payload)
                   b"R": the pickled return value (manifest, then pickle)
                   b"G": a value a generator function yielded (as b"R");
                         the call's b"R" (None) or b"E" follows the last
                   b"E": the exception, as four u32-length-prefixed fields:
                         pickled exception (may be empty; manifest, then
                         pickle; a plain dict {"atoll_error": ...} for
                         atoll's own errors),
                         type name, message, formatted traceback
                   b"S": the return value could not be pickled (message)
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import io
import os
import struct
import sys
import types
from collections import OrderedDict

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: a worker's start skips typing
    from typing import Any

CALL_FD = 3
RESULT_FD = 4
FUNCTION_CACHE_SIZE = 32

_HEADER = struct.Struct(">IB")
_U32 = struct.Struct(">I")


# How much of the call channel is read ahead; large payloads bypass it, read
# straight into the objects they unpickle as.
_READ_BUFFER = 1 << 20
# Payloads this large are unpickled as they are read from the pipe; smaller
# ones are read whole first.
_STREAM_FROM = 1 << 20
# The most buffers one os.writev takes (Linux's IOV_MAX).
_IOV_MAX = 1024
# A bytes this large in a value is spliced into the result pipe (_Splicer).
_SPLICE_FROM = 1 << 20


class _Splicer:
    """vmsplice(2) through ctypes (the os module has no binding): the pages
    of a bytes object go into the pipe by reference. Off for good where the
    call fails (not Linux, not a pipe, refused by a sandbox): writev copies
    instead."""

    def __init__(self) -> None:
        self._call: Any = None
        self._iovec: Any = None
        self.off = not sys.platform.startswith("linux")
        # The bytes whose pages the pipe may still refer to: kept until the
        # next call (release).
        self.kept: list[bytes] = []
        # How many went by reference, for a test to see it happen.
        self.spliced = 0

    def _setup(self) -> bool:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            call = libc.vmsplice

            class IOVec(ctypes.Structure):
                _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

            call.argtypes = [ctypes.c_int, ctypes.POINTER(IOVec), ctypes.c_size_t, ctypes.c_uint]
            call.restype = ctypes.c_ssize_t
            self._call, self._iovec, self._ctypes = call, IOVec, ctypes
            return True
        except (ImportError, OSError, AttributeError):
            self.off = True
            return False

    def write(self, fd: int, data: bytes) -> bool:
        """Splices all of data into fd; False (nothing written) where it
        cannot, and the caller writes it."""
        if self.off or (self._call is None and not self._setup()):
            return False
        ctypes = self._ctypes
        base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
        done, size = 0, len(data)
        while done < size:
            iov = self._iovec(base + done, size - done)
            n = self._call(fd, ctypes.byref(iov), 1, 0)
            if n < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                if done == 0:
                    self.off = True
                    return False
                raise OSError(err, os.strerror(err))
            done += n
        self.kept.append(data)
        self.spliced += 1
        return True

    def release(self) -> None:
        self.kept.clear()


_splicer = _Splicer()


class _Frame:
    """The unread rest of one frame of the call channel, as the file an
    unpickler reads: a bytes or bytearray of any size is filled by
    readinto straight from the pipe, so a 100 MB argument is never held
    twice (as frame and as value)."""

    def __init__(self, stream: io.BufferedReader, left: int):
        self.stream = stream
        self.left = left

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.left:
            n = self.left
        data = self.stream.read(n) if n else b""
        self.left -= len(data)
        if len(data) < n:
            raise EOFError("the call channel ended inside a frame")
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")[: self.left]
        got = self.stream.readinto(view) if len(view) else 0
        self.left -= got
        return got

    def readline(self) -> bytes:
        data = self.stream.readline(self.left)
        self.left -= len(data)
        return data

    def peek(self, n: int = 0) -> bytes:
        return self.stream.peek(n)[: self.left] if self.left else b""

    def drain(self) -> None:
        """Reads what the frame's reader left, up to the next frame."""
        while self.left:
            got = len(self.stream.read(min(self.left, _READ_BUFFER)))
            if not got:
                raise EOFError("the call channel ended inside a frame")
            self.left -= got


def _read_frame(stream: io.BufferedReader) -> tuple[bytes, _Frame] | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    length, kind = _HEADER.unpack(header)
    return bytes([kind]), _Frame(stream, max(0, length - 1))


def _write_frame(fd: int, kind: bytes, *parts) -> None:
    """Writes one frame; its parts (bytes, or memoryviews of a value's own
    memory) go out with os.writev, uncopied; a large bytes in a call's
    value (not a yielded one, which the generator may follow with many) is
    spliced."""
    length = 1 + sum(memoryview(p).nbytes for p in parts)
    batch: list = [_HEADER.pack(length, kind[0])]
    for part in parts:
        if kind == b"R" and type(part) is bytes and len(part) >= _SPLICE_FROM and not _splicer.off:
            _writev_all(fd, batch)
            batch = []
            if _splicer.write(fd, part):
                continue
        if len(part):
            batch.append(part)
    _writev_all(fd, batch)


def _writev_all(fd: int, parts: list) -> None:
    views = [memoryview(p) for p in parts]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        done = 0
        while done < len(views) and written >= views[done].nbytes:
            written -= views[done].nbytes
            done += 1
        del views[:done]
        if written:
            views[0] = views[0][written:]


def _field(value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    return _U32.pack(len(value)) + value


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def _exception_frame(exc: BaseException, pickling) -> tuple[bytes, ...]:
    # The first frame is the runner's own; the user's code starts below it.
    import traceback

    user_tb = exc.__traceback__.tb_next if exc.__traceback__ else None
    tb = "".join(traceback.format_exception(type(exc), exc, user_tb))
    try:
        pickled, _ = pickling.dumps(exc)
    except Exception:  # noqa: BLE001 - an unpicklable exception still reports its text
        pickled = b""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001
        message = "<unprintable exception>"
    return (_field(pickled), _field(_type_name(exc)), _field(message), _field(tb))


def _load_pickling():
    """atoll/_pickling.py, beside this file, without importing atoll."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_pickling.py")
    spec = importlib.util.spec_from_file_location("atoll_pickling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _AtollError(Exception):
    """atoll's own error raised here; it travels as plain data, since the
    runner does not import atoll's error classes."""

    def __init__(self, fields: dict[str, Any]):
        super().__init__(fields["message"])
        self.fields = fields


def _atoll_error_frame(err: _AtollError, pickling) -> tuple[bytes, ...]:
    name = err.fields["atoll_error"]
    return (
        _field(pickling.dumps(err.fields)[0]),
        _field(f"atoll.{name}"),
        _field(err.fields["message"]),
        _field(""),
    )


def _is_cloudpickle(name: str) -> bool:
    return name == "cloudpickle" or name.startswith("cloudpickle.")


class _OwnModules:
    """The runner's own cloudpickle, imported from the runtime directory
    when first needed (most calls need none: see _pickling): in
    sys.modules only inside `with own_modules:`, where the runner
    unpickles calls and pickles results (a pickle names the cloudpickle
    functions that rebuild its objects by module name); outside, the
    user's code finds its own cloudpickle, or none."""

    def __init__(self, runtime: str):
        self.runtime = runtime
        self.own: dict[str, Any] = {}
        self.saved: dict[str, Any] = {}
        self.kept = False
        self.imported = False
        self.depth = 0  # how many `with` blocks are open
        # Which cloudpickle modules sys.modules held at the last look, in
        # the user's view and in the runner's, and how many modules it
        # held then: a scan of sys.modules costs tens of microseconds, on
        # every call twice, while the modules change only when something
        # is imported (or removed), which changes their count.
        self._looked: dict[bool, tuple[int, list[str]]] = {}

    def _import(self) -> None:
        self.imported = True
        if not self.runtime:
            return  # the environment itself provides cloudpickle
        # The user's own cloudpickle, if its code imported one, steps
        # aside while the runner's is imported.
        user = self._take(runner_view=False)
        sys.path.insert(0, self.runtime)
        try:
            import cloudpickle  # noqa: F401 - kept in self.own
        finally:
            sys.path.remove(self.runtime)
            importlib.invalidate_caches()
        self.own = self._take(runner_view=True)
        if self.depth and not self.kept:
            self.saved = user  # inside `with`: the runner's view
            sys.modules.update(self.own)
        else:
            sys.modules.update(user)

    def _take(self, runner_view: bool) -> dict[str, Any]:
        modules = sys.modules
        count, names = self._looked.get(runner_view, (-1, []))
        if count != len(modules):
            names = [n for n in modules if _is_cloudpickle(n)]
            self._looked[runner_view] = (len(modules), names)
        return {n: modules.pop(n) for n in names if n in modules}

    def __enter__(self):
        self.depth += 1
        if self.depth == 1 and self.own and not self.kept:
            self.saved = self._take(runner_view=False)
            sys.modules.update(self.own)
        return self

    def __exit__(self, *exc) -> None:
        self.depth -= 1
        if self.depth == 0 and self.own and not self.kept:
            # Submodules imported meanwhile are the runner's too.
            self.own.update(self._take(runner_view=True))
            sys.modules.update(self.saved)
            self.saved = {}

    def keep(self) -> None:
        """Leaves the runner's cloudpickle in sys.modules for good: the
        user's code imported atoll, whose nested calls must pickle with
        the very cloudpickle that rebuilt the function they are made from
        (a second copy of it recurses on what the first rebuilt)."""
        if not self.imported:
            self._import()
        if self.own and not self.kept:
            self.kept = True
            self._take(runner_view=False)
            self.saved = {}
            sys.modules.update(self.own)

    def cloudpickle(self):
        if not self.imported:
            self._import()
        with self:
            import cloudpickle

            return cloudpickle


class _RuntimeOnImport:
    """A meta path finder that, when the user's code first imports atoll
    (a nested call), appends the runtime directory to sys.path, so that
    the SDK finds grpcio and protobuf behind the environment's own
    packages, and keeps the runner's cloudpickle for the SDK to pickle
    with (as it was before the runtime was hidden); then it has nothing
    more to do."""

    def __init__(self, runtime: str, own_modules: _OwnModules):
        self.runtime = runtime
        self.own_modules = own_modules

    def find_spec(self, name, path=None, target=None):
        # It stays in sys.meta_path (removing itself while the import
        # system walks the list would skip the next finder), idle.
        if name == "atoll" and self.runtime and self.runtime not in sys.path:
            sys.path.append(self.runtime)
            importlib.invalidate_caches()
            self.own_modules.keep()
        return None

    def install(self) -> None:
        if self.runtime:
            sys.meta_path.insert(0, self)


class _Loader:
    """Unpickles what the caller sent, checking each payload's manifest
    against this environment first: a payload that fails to load because a
    distribution is missing or of another version becomes a
    VersionMismatchError naming it, both versions and the fix."""

    def __init__(self, pickling, own_modules: _OwnModules):
        self.pickling = pickling
        self.own_modules = own_modules

    def load(self, source, what: str):
        """Unpickles a payload: bytes, or a _Frame whose rest it fills,
        read from the pipe as it unpickles (the frame is then read to its
        end, whatever happened)."""
        p = self.pickling
        found = []
        if isinstance(source, _Frame) and source.left < _STREAM_FROM:
            # Small payloads are read whole: an unpickler reading from a
            # Python file object calls it for every opcode it peeks at
            # (22 µs for a call without arguments, against 2 µs).
            source = source.read()
        streamed = isinstance(source, _Frame)
        body = None
        try:
            if streamed:
                manifest = p.read_manifest(source.read)
            else:
                manifest, body = p.split(source)
            found = p.mismatches(manifest) if manifest else []
            with self.own_modules:
                return p.load(source) if streamed else p.loads(body)
        except Exception as exc:  # noqa: BLE001 - reported with its cause
            if not found:
                raise _AtollError(
                    {
                        "atoll_error": "SerializationError",
                        "message": f"{what} could not be unpickled in the worker: {type(exc).__name__}: {exc}",
                    }
                ) from exc
            m = p.culprit(found, exc)
            raise _AtollError(
                {
                    "atoll_error": "VersionMismatchError",
                    "message": p.explain(m, exc, what=what, to_worker=True, plain=p.PLAIN_ARGUMENT, others=found),
                    "distribution": m.distribution,
                    "local_version": m.sender_version,
                    "remote_version": m.local_version,
                    "culprit": " and ".join(u for u in m.uses if u) or what,
                }
            ) from exc
        finally:
            if streamed:
                source.drain()
            elif body is not None:
                body.release()
            p.warn_loaded(found, what, to_worker=True)


_CO_GENERATOR = 0x20  # inspect.CO_GENERATOR; inspect itself costs a worker's start 10 ms


def _is_generator_function(fn) -> bool:
    """inspect.isgeneratorfunction: a generator function, also behind
    methods and functools.partial."""
    while True:
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif isinstance(fn, types.MethodType):
            fn = fn.__func__
        else:
            break
    return isinstance(fn, types.FunctionType) and bool(fn.__code__.co_flags & _CO_GENERATOR)


def _parse_env(payload: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    view = memoryview(payload)
    fields = []
    while view:
        (n,) = _U32.unpack_from(view)
        fields.append(bytes(view[_U32.size : _U32.size + n]).decode("utf-8", "surrogateescape"))
        view = view[_U32.size + n :]
    for name, value in zip(fields[::2], fields[1::2]):
        env[name] = value
    return env


class _CallEnv:
    """Sets a call's environment variables for that call only."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.saved: dict[str, str | None] = {}

    def __enter__(self):
        for name, value in self.env.items():
            self.saved[name] = os.environ.get(name)
            os.environ[name] = value

    def __exit__(self, *_exc):
        for name, old in self.saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _stream_generator(gen, fn, pickling, own_modules, result_fd: int) -> None:
    """Sends each value gen yields as it is produced; the call's end
    (a None result, or the exception raised mid-stream) follows."""
    name = getattr(fn, "__qualname__", "the function")
    try:
        for value in gen:
            _flush_std_streams()
            try:
                with own_modules:
                    data, _ = pickling.dumps_parts(value)
            except Exception as exc:  # noqa: BLE001
                message = (
                    f"a value {name} yielded (a {type(value).__qualname__}) "
                    f"could not be pickled: {type(exc).__name__}: {exc}"
                )
                _write_frame(result_fd, b"S", message.encode("utf-8", "replace"))
                return
            _write_frame(result_fd, b"G", *data)
            del value, data
    except BaseException as exc:  # noqa: BLE001 - every exception goes back to the caller
        _flush_std_streams()
        with own_modules:
            answer = _exception_frame(exc, pickling)
        _write_frame(result_fd, b"E", *answer)
        return
    _flush_std_streams()
    with own_modules:
        end = pickling.dumps(None)[0]
    _write_frame(result_fd, b"R", end)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not lose the result
            pass


def serve(call_fd: int = CALL_FD, result_fd: int = RESULT_FD, runtime: str = "", preload: tuple[str, ...] = ()) -> int:
    own_modules = _OwnModules(runtime)
    pickling = _load_pickling()
    pickling.use_cloudpickle(own_modules.cloudpickle)
    if "cloudpickle" in preload:
        # The function's pickle needs it: imported now, while the worker
        # starts on a full core, not in the first call on its quota.
        pickling.cloudpickle_module()
    _RuntimeOnImport(runtime, own_modules).install()
    loader = _Loader(pickling, own_modules)
    functions: OrderedDict[bytes, object] = OrderedDict()
    _write_frame(result_fd, b"Y")
    calls = io.open(call_fd, "rb", buffering=_READ_BUFFER, closefd=False)  # noqa: SIM115 - the process's
    env: dict[str, str] = {}
    try:
        while True:
            frame = _read_frame(calls)
            # The last value's pages have all been taken: the next call
            # comes only after the whole value was received.
            _splicer.release()
            if frame is None:
                return 0
            kind, rest = frame
            if kind == b"V":
                env = _parse_env(rest.read())
                continue
            if kind != b"C":
                print(f"atoll runner: unexpected frame {kind!r}", file=sys.stderr)
                return 2
            (fn_len,) = _U32.unpack(rest.read(_U32.size))
            fn_bytes = rest.read(fn_len)
            with _CallEnv(env):
                env = {}
                # The arguments are unpickled as they are read from the
                # pipe: a call's memory is its values', bounded by its
                # machine type.
                _serve_call(fn_bytes, rest, functions, loader, pickling, own_modules, result_fd)
            rest.drain()
    except EOFError:
        return 0  # the agent went away mid-frame


def _serve_call(fn_bytes, arguments, functions, loader, pickling, own_modules, result_fd: int) -> None:
    fn = None
    try:
        # The same function bytes map to the same function object, so
        # module globals set by one call are seen by the next.
        fn = functions.get(fn_bytes)
        if fn is None:
            fn = loader.load(fn_bytes, "the function")
            functions[fn_bytes] = fn
            if len(functions) > FUNCTION_CACHE_SIZE:
                functions.popitem(last=False)
        else:
            functions.move_to_end(fn_bytes)
        name = getattr(fn, "__qualname__", "the function")
        args, kwargs = loader.load(arguments, f"the arguments of {name}")
        value = fn(*args, **kwargs)
        # The arguments are freed before the result is pickled, unless the
        # result holds them.
        del args, kwargs
    except _AtollError as err:
        arguments.drain()
        _flush_std_streams()
        with own_modules:
            answer = _atoll_error_frame(err, pickling)
        _write_frame(result_fd, b"E", *answer)
        return
    except BaseException as exc:  # noqa: BLE001 - every exception goes back to the caller
        arguments.drain()
        _flush_std_streams()
        with own_modules:
            answer = _exception_frame(exc, pickling)
        _write_frame(result_fd, b"E", *answer)
        return
    if _is_generator_function(fn) and type(value) is types.GeneratorType:
        # Only a generator function streams (the caller decided so from
        # the same test); a generator returned by a plain function is a
        # value, and one that cannot be pickled.
        _stream_generator(value, fn, pickling, own_modules, result_fd)
        return
    _flush_std_streams()
    try:
        with own_modules:
            result, _ = pickling.dumps_parts(value)
    except Exception as exc:  # noqa: BLE001
        name = getattr(fn, "__qualname__", "the function")
        message = (
            f"the return value of {name} (a {type(value).__qualname__}) "
            f"could not be pickled: {type(exc).__name__}: {exc}"
        )
        _write_frame(result_fd, b"S", message.encode("utf-8", "replace"))
        return
    _write_frame(result_fd, b"R", *result)


def main(runtime: str = "", preload: list[str] | tuple[str, ...] = ()) -> None:
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    # Line by line, as on a terminal, not unbuffered (-u writes a print's
    # text and its newline apart): a line is one write, so the lines of
    # calls running at once (a map's items) reach the caller whole, never
    # one inside another. A partial line goes out on flush(), and the
    # runner flushes both streams before every value and result.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True, write_through=False)
    sys.argv = ["atoll-worker"]
    sys.exit(serve(runtime=runtime, preload=tuple(preload)))


if __name__ == "__main__":
    main()
