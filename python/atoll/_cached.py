"""@cached: results memoized inside a warm worker."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

import cloudpickle

F = TypeVar("F", bound=Callable[..., Any])

# One cache per function, shared by every copy of it this process
# unpickles: a warm worker receives the function anew with each call.
_CACHES: dict[str, dict[Any, Any]] = {}


def _function_id(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    digest = hashlib.sha256(code.co_code if code else repr(fn).encode()).hexdigest()[:16]
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}:{digest}"


def _arguments_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    key = (args, tuple(sorted(kwargs.items())))
    try:
        hash(key)
        return key
    except TypeError:
        return cloudpickle.dumps(key)


class CachedFunction:
    """A function whose results are memoized per argument tuple in this process."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.__wrapped__ = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        cache = _CACHES.setdefault(_function_id(self.__wrapped__), {})
        key = _arguments_key(args, kwargs)
        try:
            return cache[key]
        except KeyError:
            pass
        value = self.__wrapped__(*args, **kwargs)
        cache[key] = value
        return value

    def cache_clear(self) -> None:
        """Forgets every cached result of this function in this process."""
        _CACHES.pop(_function_id(self.__wrapped__), None)


def cached(fn: F) -> F:
    """Memoizes ``fn`` inside the worker that runs it.

    While the worker stays warm (see ``keep_alive``), a call with the same
    arguments returns the stored result instead of running again; a new
    worker starts with an empty cache.

    Example::

        @cached
        def load_model():
            time.sleep(2)
            return "model"

        @isolated(keep_alive=10)
        def predict():
            return load_model()   # slow on the first call only
    """
    if not callable(fn):
        raise TypeError(f"@cached decorates a function, not {type(fn).__name__}")
    return CachedFunction(fn)  # type: ignore[return-value]
