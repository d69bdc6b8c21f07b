"""Serialization by value with cloudpickle, with errors that name the culprit.

Every payload carries a manifest of the installed distributions it refers
to by reference (see _pickling). What can be known on the caller is checked
before anything is sent: a function or argument that refers to a
distribution its requirements cannot provide, an object that cannot be
pickled (named by its path inside the argument). Return values are checked
against this interpreter before they are unpickled."""

from __future__ import annotations

import inspect
import io
import linecache
import os
import re
import sys
import sysconfig
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

import cloudpickle

from atoll import _errors, _pickling
from atoll._call import Loaded
from atoll._errors import AtollError, RemoteError, SerializationError, VersionMismatchError


# How deep the culprit search looks into an unpicklable value, and how many
# children of one container it tries.
_SEARCH_DEPTH = 40
_SEARCH_WIDTH = 10_000


def _describe(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    return f"a {name}"


def _pickles(value: Any) -> Exception | None:
    try:
        dumps(value)
    except Exception as exc:  # noqa: BLE001 - any pickling failure names the culprit
        return exc
    return None


def _children(value: Any) -> list[tuple[str, Any]]:
    """The parts a pickle of value is made of, each with the path suffix
    that names it."""
    if isinstance(value, dict):
        return [(f"[{k!r}]", v) for k, v in list(value.items())[:_SEARCH_WIDTH]]
    if isinstance(value, (list, tuple)):
        return [(f"[{i}]", v) for i, v in enumerate(value[:_SEARCH_WIDTH])]
    if isinstance(value, (set, frozenset)):
        return [(f" (an element {v!r:.40})", v) for v in list(value)[:_SEARCH_WIDTH]]
    parts: list[tuple[str, Any]] = []
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict):
        parts += [(f".{k}", v) for k, v in list(state.items())[:_SEARCH_WIDTH]]
    for slot in getattr(type(value), "__slots__", ()) if not isinstance(value, type) else ():
        if isinstance(slot, str) and hasattr(value, slot):
            parts.append((f".{slot}", getattr(value, slot)))
    return parts


def find_culprit(path: str, value: Any, error: Exception) -> tuple[str, Any, Exception]:
    """The innermost part of value that fails to pickle, as (path, part,
    its error): args[0]['db']['conn'] rather than args[0]. A value too deep
    to pickle is the culprit itself."""
    for _ in range(_SEARCH_DEPTH):
        if _too_deep(error):
            break
        for suffix, child in _children(value):
            child_error = _pickles(child)
            if child_error is not None:
                path, value, error = path + suffix, child, child_error
                break
        else:
            break
    return path, value, error


def _too_deep(error: Exception) -> bool:
    # cloudpickle turns the RecursionError into a PicklingError.
    return isinstance(error, RecursionError) or "recursion" in str(error)


def _unpicklable_message(path: str, value: Any, error: Exception) -> str:
    if _too_deep(error):
        return (
            f"{path} is nested too deeply to pickle (more than Python's recursion limit of "
            f"{sys.getrecursionlimit()} levels): flatten it, or raise the limit with sys.setrecursionlimit()"
        )
    return f"{path} is {_describe(value)}: it cannot be pickled ({type(error).__name__}: {error})"


def dumps(value: Any, protocol: int | None = None) -> bytes:
    """A bare pickle of value (no manifest), code objects keeping their
    source files."""
    with io.BytesIO() as buffer:
        _pickling.Pickler(buffer, protocol=protocol).dump(value)
        return buffer.getvalue()


def _installed_prefixes() -> tuple[str, ...]:
    """Directories that hold installed code: the standard library, site
    directories, and wherever the SDK and its own dependencies were found
    (inside a worker they live in directories of their own)."""
    import grpc

    paths = sysconfig.get_paths()
    dirs = {paths["stdlib"], paths["purelib"], paths["platlib"]}
    for module in (cloudpickle, grpc):
        dirs.add(os.path.dirname(os.path.dirname(os.path.abspath(module.__file__ or ""))))
    # The SDK's own package (and the runner, loaded from it in a worker).
    dirs.add(os.path.dirname(os.path.abspath(__file__)))
    return tuple(os.path.realpath(d) for d in dirs if d)


_INSTALLED_PREFIXES = _installed_prefixes()


_shipped: set[str] = set()
_modules_seen = 0


def _is_local(name: str, module: Any) -> bool:
    if name == "__main__" or name.split(".")[0] == "atoll":
        return False
    path = getattr(module, "__file__", None)
    if not path:
        return False
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not any(real.startswith(prefix + os.sep) for prefix in _INSTALLED_PREFIXES)


def _ship_local_modules_by_value() -> None:
    """The caller's own modules (a local tasks.py and the utils.py it uses, a
    test file) cannot be imported in the worker, so their functions and
    classes travel by value like those of __main__; installed packages and
    the standard library travel by reference. sys.modules is scanned again
    only when it has grown."""
    global _modules_seen
    if len(sys.modules) == _modules_seen:
        return
    for name, module in list(sys.modules.items()):
        if name not in _shipped and module is not None and _is_local(name, module):
            cloudpickle.register_pickle_by_value(module)
            _shipped.add(name)
    _modules_seen = len(sys.modules)


_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_provided_cache: dict[tuple[str, ...], frozenset[str] | None] = {}


def _provided(requirements: Iterable[str]) -> frozenset[str] | None:
    """The distributions an environment of these requirements holds, as far
    as this interpreter's metadata tells: the requirements and their
    dependencies. None when a requirement is not installed here (its
    dependencies are then unknown, and nothing is refused before sending)."""
    key = tuple(requirements)
    if key in _provided_cache:
        return _provided_cache[key]
    import importlib.metadata  # only for payloads that refer to distributions

    names: set[str] = set()
    todo = []
    for req in key:
        match = _REQUIREMENT_NAME.match(req)
        if not match:
            _provided_cache[key] = None
            return None
        todo.append(_pickling.canonical(match[1]))
    while todo:
        name = todo.pop()
        if name in names:
            continue
        names.add(name)
        try:
            deps = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            if name not in _pickling.PROVIDED:
                _provided_cache[key] = None
                return None
            deps = []
        for dep in deps:
            match = _REQUIREMENT_NAME.match(dep)
            if match and "extra ==" not in dep:
                todo.append(_pickling.canonical(match[1]))
    _provided_cache[key] = frozenset(names)
    return _provided_cache[key]


def _check_provided(manifest: dict[str, dict[str, Any]], requirements: Iterable[str], what: str) -> None:
    """Refuses, before sending, a payload that refers to a distribution the
    worker's environment cannot have."""
    if not manifest:
        return
    provided = _provided(requirements)
    if provided is None:
        return
    for dist, entry in manifest.items():
        if dist in provided:
            continue
        uses = " and ".join(u for u in entry["uses"] if u) or what
        pin = f'"{dist}=={entry["version"]}"'
        hint = ", or import it inside the function" if uses.startswith("function ") else f", or {_pickling.PLAIN_ARGUMENT}"
        raise VersionMismatchError(
            f"{uses} refers to {dist} ({dist} {entry['version']} here), which the function's requirements "
            f"do not provide, so the worker could not load it. Fix: add {pin} to the function's requirements{hint}.",
            distribution=dist,
            local_version=entry["version"],
            culprit=uses,
        )


def dumps_function(fn: Callable[..., Any], requirements: Iterable[str] = ()) -> bytes:
    """Pickles fn by value, with its manifest; SerializationError names what
    could not be pickled, VersionMismatchError a distribution the
    requirements lack."""
    _ship_local_modules_by_value()
    name = getattr(fn, "__qualname__", repr(fn))
    label = f"function {name}"
    try:
        payload, manifest = _pickling.dumps(fn, label=label)
    except Exception as exc:  # noqa: BLE001
        items: list[tuple[str, Any]] = []
        try:
            cv = inspect.getclosurevars(fn)
            items += [(f"the variable '{k}' it closes over", v) for k, v in cv.nonlocals.items()]
            items += [(f"the global '{k}'", v) for k, v in cv.globals.items()]
        except (TypeError, ValueError):
            pass
        for i, default in enumerate(getattr(fn, "__defaults__", None) or ()):
            items.append((f"its default argument #{i}", default))
        for path, value in items:
            error = _pickles(value)
            if error is not None:
                path, value, error = find_culprit(path, value, error)
                raise SerializationError(
                    f"cannot send function {name}: {_unpicklable_message(path, value, error)}. "
                    "Create it inside the function instead."
                ) from exc
        raise SerializationError(
            f"cannot send function {name}: it could not be pickled: {type(exc).__name__}: {exc}"
        ) from exc
    _check_provided(manifest, requirements, label)
    return payload


class FunctionPickle:
    """A function's pickle (dumps_function), kept between calls while
    nothing it is made of changed (see _pickling.function_state): pickling
    a function by value is most of what a warm call costs the caller.
    Safe from several threads: the kept pickle and its state are replaced
    together."""

    def __init__(self, fn: Callable[..., Any], requirements: Iterable[str] = ()) -> None:
        self.fn = fn
        self.requirements = tuple(requirements)
        self._kept: tuple[list[Any], bytes] | None = None

    def get(self) -> bytes:
        _ship_local_modules_by_value()  # before the state: it decides what travels by value
        state = _pickling.function_state(self.fn)
        kept = self._kept
        if state is not None and kept is not None and _pickling.same_state(state, kept[0]):
            return kept[1]
        payload = dumps_function(self.fn, self.requirements)
        # Kept only if pickling changed nothing the state covers (its first
        # run may import modules, or register the caller's by value).
        after = _pickling.function_state(self.fn) if state is not None else None
        stable = after is not None and _pickling.same_state(state, after)
        self._kept = (after, payload) if stable else None
        return payload


# Arguments pickled to less than this are sent as one piece.
_ONE_PIECE = 1 << 20


def dumps_arguments(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], requirements: Iterable[str] = ()
) -> tuple[bytes, ...]:
    """Pickles (args, kwargs) with their manifest, as pieces whose
    concatenation is the payload: a large bytes argument is a piece of its
    own, sent from its own memory rather than copied into the pickle (small
    payloads are one piece). SerializationError names the part of an
    argument that failed (args[0]['conn']), VersionMismatchError a
    distribution the requirements lack."""
    try:
        parts, manifest = _pickling.dumps_parts((args, kwargs), protocol=5, copy_mutable=True)
        if manifest:
            # Only arguments that refer to installed distributions pay for
            # naming which argument uses which: pickled again, labeled.
            labeled = (
                [_pickling.Labeled(f"argument {i} of {name}", v) for i, v in enumerate(args)],
                {k: _pickling.Labeled(f"keyword argument '{k}' of {name}", v) for k, v in kwargs.items()},
            )
            parts, manifest = _pickling.dumps_parts(labeled, protocol=5, copy_mutable=True)
    except Exception as exc:  # noqa: BLE001
        items = [(f"argument {i}", f"args[{i}]", v) for i, v in enumerate(args)]
        items += [(f"keyword argument '{k}'", f"kwargs[{k!r}]", v) for k, v in kwargs.items()]
        for label, path, value in items:
            error = _pickles(value)
            if error is not None:
                path, value, error = find_culprit(path, value, error)
                raise SerializationError(
                    f"cannot send {label} of {name}: {_unpicklable_message(path, value, error)}"
                ) from exc
        raise SerializationError(f"cannot send the arguments of {name}: {type(exc).__name__}: {exc}") from exc
    _check_provided(manifest, requirements, f"the arguments of {name}")
    if len(parts) == 1 or sum(map(len, parts)) < _ONE_PIECE:
        return (b"".join(parts),)
    return tuple(parts)  # type: ignore[arg-type]  # bytes only (copy_mutable)


def loads_value(name: str, data: bytes | memoryview | BinaryIO | Loaded) -> Any:
    """Unpickles a return value, checking its manifest first: what fails to
    load because of a distribution this interpreter lacks or has in another
    version raises VersionMismatchError with the fix. data is the payload,
    or a file it is read from as it unpickles, or a value unpickled already
    (Loaded: returned, or its exception raised)."""
    if isinstance(data, Loaded):
        return data.get()
    what = f"the return value of {name}"
    streamed = hasattr(data, "readinto")
    try:
        if streamed:
            manifest, body = _pickling.read_manifest(data.read), data
        else:
            manifest, body = _pickling.split(data)
    except Exception as exc:  # noqa: BLE001
        raise SerializationError(f"{what} arrived malformed: {exc}") from exc
    found = _pickling.mismatches(manifest)
    try:
        value = cloudpickle.load(body) if streamed else cloudpickle.loads(body)
    except Exception as exc:  # noqa: BLE001
        if found:
            m = _pickling.culprit(found, exc)
            raise VersionMismatchError(
                _pickling.explain(m, exc, what=what, to_worker=False, plain=_pickling.PLAIN_RETURN, others=found),
                distribution=m.distribution,
                local_version=m.local_version,
                remote_version=m.sender_version,
                culprit=what,
            ) from exc
        raise SerializationError(
            f"{what} could not be unpickled here: {type(exc).__name__}: {exc}. "
            "Return only types this interpreter can import."
        ) from exc
    _pickling.warn_loaded(found, what, to_worker=False)
    return value


class RemoteTraceback(Exception):
    """Carries the traceback of an exception raised in the worker."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "the exception below was raised in the atoll worker:\n\n" + self.tb.rstrip()


_FRAME_LINE = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in ')


def with_local_source(tb: str) -> str:
    """Adds source lines to a remote traceback from the caller's own files:
    the worker runs the caller's code by value and cannot read them."""
    lines = tb.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        match = _FRAME_LINE.match(line)
        has_source = i + 1 < len(lines) and lines[i + 1].startswith("    ")
        if match and not has_source:
            source = linecache.getline(match["file"], int(match["line"])).strip()
            if source:
                out.append("    " + source)
    return "\n".join(out) + ("\n" if tb.endswith("\n") else "")


def rebuild_exception(pickled: bytes, type_name: str, message: str, tb: str) -> BaseException:
    """Rebuilds the remote exception with its traceback chained; falls back to
    a RemoteError carrying the type name, message and traceback."""
    tb = with_local_source(tb)
    reason = ""
    if pickled:
        found: list[_pickling.Mismatch] = []
        try:
            manifest, body = _pickling.split(pickled)
            found = _pickling.mismatches(manifest)
            exc = cloudpickle.loads(body)
        except Exception as error:  # noqa: BLE001 - fall back to RemoteError
            exc = None
            if found:
                m = _pickling.culprit(found, error)
                reason = _pickling.explain(
                    m, error, what="the exception", to_worker=False,
                    plain="raise an exception of a type this interpreter can import", others=found,
                )
        if isinstance(exc, dict) and exc.get("atoll_error"):
            # atoll's own error, raised by the runner (which does not
            # import atoll) as plain data.
            return _errors.from_runner(exc)
        if isinstance(exc, BaseException):
            exc.__cause__ = RemoteTraceback(tb)
            return exc
    return RemoteError(type_name, message, tb, reason)


__all__ = [
    "AtollError",
    "dumps",
    "find_culprit",
    "dumps_arguments",
    "dumps_function",
    "FunctionPickle",
    "loads_value",
    "rebuild_exception",
    "RemoteTraceback",
]
