"""The @isolated decorator and IsolatedFunction."""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar, overload

from atoll._call import Call, EnvironmentSpec
from atoll._credentials import CloudKeyCredentials
from atoll._host import Host, cloud
from atoll._serialize import dumps_arguments, dumps_function

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

    @property
    def python_version(self) -> str:
        """This interpreter's major.minor: workers run the same."""
        return "%d.%d" % sys.version_info[:2]


_OPTION_NAMES = ("requirements", "machine_type", "keep_alive", "host", "credentials")


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
        functools.update_wrapper(self, func)

    @property
    def name(self) -> str:
        """The function's module and qualified name, as errors and the server's records show it."""
        return f"{getattr(self.func, '__module__', '?')}.{getattr(self.func, '__qualname__', repr(self.func))}"

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.options.host.run(self._call(args, kwargs))

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
        """This function called with args and kwargs, as the value hosts run."""
        o = self.options
        return Call(
            function_name=self.name,
            function=dumps_function(self.func, o.requirements),
            arguments=dumps_arguments(self.name, args, kwargs, o.requirements),
            environment=EnvironmentSpec(o.python_version, o.requirements),
            machine_type=o.machine_type,
            keep_alive=o.keep_alive,
            credentials=o.credentials,
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
) -> Callable[[Callable[..., R]], IsolatedFunction[R]]: ...


def isolated(func: Callable[..., R] | None = None, /, **options: Any) -> Any:
    """Makes a function run in an isolated environment.

    Options (keyword-only):
      requirements: pip requirement strings to install in the environment.
      machine_type: the server's machine type, "XS" (default) to "XL", "GPU".
      keep_alive: seconds the worker stays warm after a call (default 10).
      host: ``cloud`` (an atoll server, the default) or ``local``.
      credentials: a ``CloudKeyCredentials``; else taken from the environment.

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
