"""The @isolated decorator and IsolatedFunction."""

from __future__ import annotations

import functools
import inspect
import math
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar, overload

from atoll import _futures, _map
from atoll._call import Call, EnvironmentSpec, Retries
from atoll._credentials import CloudKeyCredentials
from atoll._host import Host, cloud
from atoll._serialize import FunctionPickle, dumps_arguments

R = TypeVar("R")

DEFAULT_MACHINE_TYPE = "XS"
DEFAULT_KEEP_ALIVE = 10


@dataclass(frozen=True)
class Options:
    """The options of an isolated function; see ``isolated``."""

    requirements: tuple[str, ...] = ()
    machine_type: str = DEFAULT_MACHINE_TYPE
    keep_alive: float = DEFAULT_KEEP_ALIVE
    host: Host = field(default=cloud)
    credentials: CloudKeyCredentials | None = None
    timeout: float | None = None
    retries: Retries | None = None
    secrets: tuple[str, ...] = ()

    @property
    def python_version(self) -> str:
        """This interpreter's major.minor: workers run the same."""
        return "%d.%d" % sys.version_info[:2]


_OPTION_NAMES = ("requirements", "machine_type", "keep_alive", "host", "credentials", "timeout", "retries", "secrets")


def _check_options(opts: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(opts) - set(_OPTION_NAMES))
    if unknown:
        raise TypeError(
            f"{where} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options are {', '.join(_OPTION_NAMES)}"
        )
    out: dict[str, Any] = {}
    if "requirements" in opts:
        reqs = opts["requirements"]
        if reqs is None:
            reqs = ()
        if isinstance(reqs, (str, bytes)) or not isinstance(reqs, (list, tuple)):
            raise TypeError(
                f"requirements must be a list of strings such as ['pyjokes'], not {type(reqs).__name__}"
            )
        for r in reqs:
            if not isinstance(r, str) or not r.strip():
                raise TypeError(f"each requirement must be a non-empty string, got {r!r}")
        out["requirements"] = tuple(r.strip() for r in reqs)
    if "machine_type" in opts:
        mt = opts["machine_type"]
        if not isinstance(mt, str) or not mt:
            raise TypeError(f"machine_type must be a machine type name such as 'XS' or 'M', not {mt!r}")
        out["machine_type"] = mt
    if "keep_alive" in opts:
        ka = opts["keep_alive"]
        if isinstance(ka, bool) or not isinstance(ka, (int, float)):
            raise TypeError(f"keep_alive must be a number of seconds, not {type(ka).__name__}")
        if not math.isfinite(ka) or ka < 0:
            raise ValueError(f"keep_alive must be 0 or more seconds, got {ka!r}")
        out["keep_alive"] = ka
    if "host" in opts:
        host = opts["host"]
        if host is None:
            host = cloud
        if not isinstance(host, Host):
            raise TypeError(f"host must be atoll.cloud or atoll.local, not {host!r}")
        out["host"] = host
    if "credentials" in opts:
        creds = opts["credentials"]
        if creds is not None and not isinstance(creds, CloudKeyCredentials):
            raise TypeError(f"credentials must be a CloudKeyCredentials, not {type(creds).__name__}")
        out["credentials"] = creds
    if "timeout" in opts:
        t = opts["timeout"]
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, (int, float)):
                raise TypeError(f"timeout must be a number of seconds or None, not {type(t).__name__}")
            if not math.isfinite(t) or t <= 0:
                raise ValueError(f"timeout must be more than 0 seconds, got {t!r}")
        out["timeout"] = t
    if "retries" in opts:
        r = opts["retries"]
        if r is None:
            r = Retries()
        elif isinstance(r, int) and not isinstance(r, bool):
            r = Retries(count=r)
        elif not isinstance(r, Retries):
            raise TypeError(f"retries must be an int or atoll.Retries(...), not {type(r).__name__}")
        out["retries"] = r
    if "secrets" in opts:
        names = opts["secrets"] or ()
        if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
            raise TypeError(f"secrets must be a list of secret names such as ['openai'], not {type(names).__name__}")
        for n in names:
            if not isinstance(n, str) or not n:
                raise TypeError(f"each secret must be a non-empty name, got {n!r}")
        out["secrets"] = tuple(names)
    return out


class IsolatedFunction(Generic[R]):
    """A function whose calls run in an isolated environment.

    Calling it sends the function and its arguments to its host and returns
    the result (or raises the function's exception). Create one with
    ``@isolated(...)``; derive variants with ``.on(...)``.
    """

    def __init__(self, func: Callable[..., R], options: Options) -> None:
        if not callable(func):
            raise TypeError(f"@isolated decorates a function, not {type(func).__name__}")
        self.func = func
        self.options = options
        self._pickle: FunctionPickle | None = None
        functools.update_wrapper(self, func)

    @property
    def name(self) -> str:
        """The function's module and qualified name, as errors and the server's records show it."""
        return f"{getattr(self.func, '__module__', '?')}.{getattr(self.func, '__qualname__', repr(self.func))}"

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        if inspect.isgeneratorfunction(self.func):
            # A generator function streams: the caller iterates over its
            # values as the worker yields them.
            return self.options.host.stream(self._call(args, kwargs))  # type: ignore[return-value]
        return self.options.host.run(self._call(args, kwargs))

    def map(
        self,
        iterable: Iterable[Any],
        *more_iterables: Iterable[Any],
        ordered: bool = True,
        return_exceptions: bool = False,
        max_concurrency: int | None = None,
    ) -> Iterator[R]:
        """Calls the function on each item (zipped with more_iterables, as
        the builtin ``map``) and yields the results as they arrive: in input
        order, or in completion order with ``ordered=False``.

        Items stream to the server, which spreads them over warm workers up
        to its capacity (or ``max_concurrency`` workers), each worker
        serving many items. A failed item raises its exception, naming the
        item's index, and the rest are cancelled; with
        ``return_exceptions=True`` it yields the exception in its place and
        the rest go on. Leaving the loop early cancels what still runs.

        Example::

            for square in f.map(range(1000)):
                print(square)
        """
        return self._map(zip(iterable, *more_iterables), ordered, return_exceptions, max_concurrency)

    def starmap(
        self,
        iterable: Iterable[Iterable[Any]],
        *,
        ordered: bool = True,
        return_exceptions: bool = False,
        max_concurrency: int | None = None,
    ) -> Iterator[R]:
        """Like ``map``, each item being the arguments of one call.

        Example::

            sums = list(add.starmap([(1, 2), (3, 4)]))   # [3, 7]
        """
        return self._map(iterable, ordered, return_exceptions, max_concurrency)

    def _map(self, args_iter: Iterable[Iterable[Any]], ordered: bool, return_exceptions: bool,
             max_concurrency: int | None) -> Iterator[R]:
        _map.check_not_generator(self.func, "map")
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise ValueError(f"max_concurrency must be a positive int or None, got {max_concurrency!r}")
        o = self.options
        template = self._call_of(self._pickled(), ())
        return _map.run_map(
            o.host.route(), template, ((tuple(a), {}) for a in args_iter),
            requirements=o.requirements, ordered=ordered, return_exceptions=return_exceptions,
            max_concurrency=max_concurrency,
        )

    def submit(self, *args: Any, **kwargs: Any) -> Future[R]:
        """Starts a call in the background and returns its
        ``concurrent.futures.Future`` (works with ``as_completed``,
        ``wait`` and ``result(timeout)``). ``cancel()`` stops the call even
        while it runs: the worker is killed.

        Example::

            futures = [f.submit(x) for x in range(10)]
            for done in concurrent.futures.as_completed(futures):
                print(done.result())
        """
        _map.check_not_generator(self.func, "submit")
        return _futures.submit(self.options.host.run, self._call(args, kwargs))

    def call_async(self, *args: Any, **kwargs: Any) -> Awaitable[R]:
        """The call as an awaitable, for asyncio: the event loop goes on
        while it runs; cancelling the task cancels the call.

        Example::

            a, b = await asyncio.gather(f.call_async(1), f.call_async(2))
        """
        _map.check_not_generator(self.func, "call_async")
        return _futures.call_async(self.options.host.run, self._call(args, kwargs))

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
        """This function called with args and kwargs, as the value hosts run."""
        # The function first: pickling it decides which of the caller's
        # modules travel by value, and so how the arguments pickle.
        function = self._pickled()
        return self._call_of(function, dumps_arguments(self.name, args, kwargs, self.options.requirements))

    def _pickled(self) -> bytes:
        """The function's pickle, kept between calls while it would come out
        the same (see FunctionPickle)."""
        pickle = self._pickle
        if pickle is None or pickle.fn is not self.func:
            pickle = self._pickle = FunctionPickle(self.func, self.options.requirements)
        return pickle.get()

    def _call_of(self, function: bytes, arguments: tuple[bytes, ...]) -> Call:
        o = self.options
        return Call(
            function_name=self.name,
            function=function,
            arguments=arguments,
            environment=EnvironmentSpec(o.python_version, o.requirements),
            machine_type=o.machine_type,
            keep_alive=o.keep_alive,
            credentials=o.credentials,
            timeout=o.timeout,
            retries=o.retries,
            secrets=o.secrets,
        )

    def on(self, host: Host | None = None, **options: Any) -> IsolatedFunction[R]:
        """Returns a new isolated function with the same body and these options
        overridden; this one is unchanged.

        Example::

            my_function_L = my_function.on(machine_type="L")
            my_function_local = my_function.on(local)
        """
        if host is not None:
            options["host"] = host
        checked = _check_options(options, ".on()")
        return IsolatedFunction(self.func, replace(self.options, **checked))

    def __repr__(self) -> str:
        o = self.options
        return (
            f"<IsolatedFunction {self.name} host={o.host!r} machine_type={o.machine_type!r} "
            f"keep_alive={o.keep_alive!r} requirements={list(o.requirements)!r}>"
        )

    def __getstate__(self) -> dict[str, Any]:
        # Explicit credentials never travel with the function: a nested call
        # in a worker authenticates with the worker's own scoped token.
        state = dict(self.__dict__)
        state["options"] = replace(self.options, credentials=None)
        return state


@overload
def isolated(func: Callable[..., R], /) -> IsolatedFunction[R]: ...


@overload
def isolated(
    *,
    requirements: list[str] | None = None,
    machine_type: str = DEFAULT_MACHINE_TYPE,
    keep_alive: float = DEFAULT_KEEP_ALIVE,
    host: Host = cloud,
    credentials: CloudKeyCredentials | None = None,
    timeout: float | None = None,
    retries: int | Retries | None = None,
    secrets: list[str] | None = None,
) -> Callable[[Callable[..., R]], IsolatedFunction[R]]: ...


def isolated(func: Callable[..., R] | None = None, /, **options: Any) -> Any:
    """Makes a function run in an isolated environment.

    Options (keyword-only):
      requirements: pip requirement strings to install in the environment.
      machine_type: the server's machine type, "XS" (default) to "XL", "GPU".
      keep_alive: seconds the worker stays warm after a call (default 10).
      host: ``cloud`` (an atoll server, the default) or ``local``.
      credentials: a ``CloudKeyCredentials``; else taken from the environment.
      timeout: seconds a call may run; past it the worker is killed and
        the call raises ``atoll.TimeoutError``. None: the server's maximum.
      retries: attempts after a failed one (an int, or ``atoll.Retries``);
        by default only infrastructure failures (a crashed worker) retry.
      secrets: names of secrets (``atoll secrets set``) whose variables the
        function sees in ``os.environ``.

    Example::

        @isolated(requirements=["pyjokes"], keep_alive=30)
        def joke():
            import pyjokes
            return pyjokes.get_joke()

        print(joke())

    ``@isolated`` without parentheses works too and uses the defaults.
    """
    checked = _check_options(options, "@isolated()")
    opts = Options(**checked)
    if func is not None:
        if options:
            raise TypeError("@isolated takes options as keywords only: @isolated(keep_alive=20)")
        if not callable(func):
            raise TypeError(
                f"@isolated takes options as keywords only, got a positional {type(func).__name__}; "
                "write @isolated(requirements=[...])"
            )
        return IsolatedFunction(func, opts)

    def decorate(fn: Callable[..., R]) -> IsolatedFunction[R]:
        return IsolatedFunction(fn, opts)

    return decorate
