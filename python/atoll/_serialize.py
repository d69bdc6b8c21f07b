"""Serialization by value with cloudpickle, with errors that name the culprit."""

from __future__ import annotations

import copyreg
import inspect
import io
import linecache
import os
import re
import sys
import sysconfig
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle

from atoll._errors import AtollError, RemoteError, SerializationError


def _code_args(code: types.CodeType) -> tuple[Any, ...]:
    """The positional arguments that rebuild code with types.CodeType,
    co_filename included."""
    head = (
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_nlocals,
        code.co_stacksize,
        code.co_flags,
        code.co_code,
        code.co_consts,
        code.co_names,
        code.co_varnames,
        code.co_filename,
        code.co_name,
    )
    tail = (code.co_freevars, code.co_cellvars)
    if sys.version_info >= (3, 11):
        return (*head, code.co_qualname, code.co_firstlineno, code.co_linetable, code.co_exceptiontable, *tail)
    return (*head, code.co_firstlineno, code.co_linetable, *tail)


def _reduce_code(code: types.CodeType) -> tuple[Any, ...]:
    # Functions shipped by value carry their code objects. cloudpickle
    # (since 3.1.3) replaces co_filename with "<dynamic-code>" to make
    # pickles deterministic, which would leave remote tracebacks naming no
    # file of the caller's and showing no source; atoll keeps the real
    # filename, whatever cloudpickle version is installed. The worker
    # rebuilds the code with types.CodeType alone, so no atoll or
    # cloudpickle code is needed there to load it.
    return types.CodeType, _code_args(code)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler with atoll's code-object reduction."""

    dispatch_table = ChainMap(
        {types.CodeType: _reduce_code},
        getattr(cloudpickle.Pickler, "dispatch_table", copyreg.dispatch_table),
    )


def dumps(value: Any, protocol: int | None = None) -> bytes:
    """cloudpickle.dumps, keeping the source file of code shipped by value."""
    with io.BytesIO() as buffer:
        _Pickler(buffer, protocol=protocol).dump(value)
        return buffer.getvalue()


def _describe(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    return f"a {name}"


def _first_unpicklable(items: list[tuple[str, Any]]) -> tuple[str, Any, Exception] | None:
    for label, value in items:
        try:
            dumps(value)
        except Exception as exc:  # noqa: BLE001 - any pickling failure names the culprit
            return label, value, exc
    return None


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


def dumps_function(fn: Callable[..., Any]) -> bytes:
    """Pickles fn by value; SerializationError names what could not be pickled."""
    _ship_local_modules_by_value()
    try:
        return dumps(fn)
    except Exception as exc:  # noqa: BLE001
        name = getattr(fn, "__qualname__", repr(fn))
        items: list[tuple[str, Any]] = []
        try:
            cv = inspect.getclosurevars(fn)
            items += [(f"the variable '{k}' it closes over", v) for k, v in cv.nonlocals.items()]
            items += [(f"the global '{k}'", v) for k, v in cv.globals.items()]
        except (TypeError, ValueError):
            pass
        for i, default in enumerate(getattr(fn, "__defaults__", None) or ()):
            items.append((f"its default argument #{i}", default))
        culprit = _first_unpicklable(items)
        if culprit is None:
            raise SerializationError(
                f"cannot send function {name}: it could not be pickled: {type(exc).__name__}: {exc}"
            ) from exc
        label, value, inner = culprit
        raise SerializationError(
            f"cannot send function {name}: {label} ({_describe(value)}) could not be pickled: "
            f"{type(inner).__name__}: {inner}. Create it inside the function instead."
        ) from exc


def dumps_arguments(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickles (args, kwargs); SerializationError names the argument that failed."""
    try:
        return dumps((args, kwargs), protocol=5)
    except Exception as exc:  # noqa: BLE001
        items = [(f"argument {i}", v) for i, v in enumerate(args)]
        items += [(f"keyword argument '{k}'", v) for k, v in kwargs.items()]
        culprit = _first_unpicklable(items)
        if culprit is None:
            raise SerializationError(
                f"cannot send the arguments of {name}: {type(exc).__name__}: {exc}"
            ) from exc
        label, value, inner = culprit
        raise SerializationError(
            f"cannot send {label} of {name} ({_describe(value)}): it could not be pickled: "
            f"{type(inner).__name__}: {inner}"
        ) from exc


def loads_value(name: str, data: bytes) -> Any:
    """Unpickles a return value."""
    try:
        return cloudpickle.loads(data)
    except Exception as exc:  # noqa: BLE001
        raise SerializationError(
            f"the return value of {name} could not be unpickled here: {type(exc).__name__}: {exc}. "
            "Return only types this interpreter can import."
        ) from exc


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
    if pickled:
        try:
            exc = cloudpickle.loads(pickled)
        except Exception:  # noqa: BLE001 - fall back to RemoteError
            exc = None
        if isinstance(exc, BaseException):
            exc.__cause__ = RemoteTraceback(tb)
            return exc
    return RemoteError(type_name, message, tb)


__all__ = [
    "AtollError",
    "dumps",
    "dumps_arguments",
    "dumps_function",
    "loads_value",
    "rebuild_exception",
    "RemoteTraceback",
]
