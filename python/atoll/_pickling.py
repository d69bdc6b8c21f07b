"""Pickling shared by the caller and the in-worker runner.

Two things atoll adds to cloudpickle, on both sides of a call:

- Code objects keep their real ``co_filename`` (cloudpickle 3.1.3 and later
  write ``"<dynamic-code>"``), so remote tracebacks name the caller's files.
- A *manifest* travels in front of every pickle: which installed
  distributions the pickle refers to by reference (an ndarray refers to
  numpy), with the sender's versions and which argument uses each. The
  receiver checks it against its own environment before unpickling, so a
  pickle that cannot load names the argument, the distribution, both versions
  and the fix instead of failing with "No module named 'numpy._core'".

Payload layout: u32 big-endian length of the manifest pickle, the manifest
(a plain dict, pickled with the standard library), then the cloudpickle
payload. An empty manifest costs 4 bytes and no pickling.

Only the standard library and cloudpickle are imported here: the runner
loads this file by path, without importing the atoll package. Even
cloudpickle is imported only when something needs it (see "Loading
without cloudpickle" below): importing it and the standard library it
pulls in (dataclasses, inspect, typing, logging...) is most of what a
worker spends getting ready, and a call of plain data to a function
pickled by value needs none of it in the worker.
"""

from __future__ import annotations

import builtins
import io
import operator
import struct
import sys
import types

try:
    # The pickle module's C core, without pickle.py's own imports (re,
    # and through it enum): the same picklers and unpicklers.
    import _pickle as pickle
except ImportError:  # not CPython
    import pickle  # type: ignore[no-redef]

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only; typing costs a worker's start 5 ms
    from typing import Any

_U32 = struct.Struct(">I")
_HIGHEST_PROTOCOL = 5

# How cloudpickle is imported when it is needed: the runner, which keeps
# its own cloudpickle out of the user's view, sets its own (use_cloudpickle).
_import_cloudpickle: Any = None
_cloudpickle: Any = None


def use_cloudpickle(importer: Any) -> None:
    """Sets the function that imports cloudpickle when it is first needed."""
    global _import_cloudpickle
    _import_cloudpickle = importer


def cloudpickle_module() -> Any:
    """cloudpickle, imported on first use."""
    global _cloudpickle
    if _cloudpickle is None:
        if _import_cloudpickle is not None:
            _cloudpickle = _import_cloudpickle()
        else:
            import cloudpickle

            _cloudpickle = cloudpickle
    return _cloudpickle

# Names no manifest mentions: the standard library, and what every worker
# and caller has beside their own packages (atoll, and the cloudpickle that
# every pickle refers to for its own helpers).
_ALWAYS_PRESENT = frozenset(sys.stdlib_module_names) | {"__main__", "builtins", "atoll", "cloudpickle"}
PROVIDED = frozenset({"atoll", "cloudpickle"})

# The last fix every message offers, by direction.
PLAIN_ARGUMENT = "convert it to plain data (lists, dicts, str, bytes, numbers) before the call"
PLAIN_RETURN = "return plain data (lists, dicts, str, bytes, numbers) instead"


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
    # The receiver rebuilds the code with types.CodeType alone: no atoll or
    # cloudpickle code is needed to load it.
    return types.CodeType, _code_args(code)


class Labeled:
    """Marks a top-level value (an argument) so that the manifest can say
    which one refers to which distribution. It unpickles as the bare value."""

    __slots__ = ("label", "value")

    def __init__(self, label: str, value: Any):
        self.label = label
        self.value = value


_FIRST = operator.itemgetter(0)


class _Recording:
    """What atoll's picklers add to the one they extend: the label of the
    argument being pickled, and the top-level modules of what they pickle
    by reference (for the manifest)."""

    def __init__(self, file: Any, protocol: int | None = None, label: str = "") -> None:
        # cloudpickle's default protocol: the highest.
        super().__init__(file, protocol=_HIGHEST_PROTOCOL if protocol is None else protocol)  # type: ignore[call-arg]
        self.label = label
        self.modules: dict[str, set[str]] = {}

    def relabel(self, labeled: Labeled) -> Any:
        """The reduction of a Labeled value: the bare value, pickled under
        its label."""
        self.label = labeled.label
        return _FIRST, ((labeled.value,),)

    def record(self, name: str | None) -> None:
        """Records the top-level module of something pickled by reference."""
        if name:
            root = name.partition(".")[0]
            if root not in _ALWAYS_PRESENT:
                labels = self.modules.get(root)
                if labels is None:
                    self.modules[root] = {self.label}
                else:
                    labels.add(self.label)


_pickler_class: Any = None


def _define_pickler() -> Any:
    """The Pickler class, defined on first use (it subclasses cloudpickle's)."""
    global _pickler_class
    if _pickler_class is not None:
        return _pickler_class
    import copyreg
    from collections import ChainMap

    cloudpickle = cloudpickle_module()

    class Pickler(_Recording, cloudpickle.Pickler):
        """cloudpickle's pickler with atoll's code-object reduction; it
        records the top-level modules of everything it pickles by
        reference."""

        dispatch_table = ChainMap(
            {types.CodeType: _reduce_code},
            getattr(cloudpickle.Pickler, "dispatch_table", copyreg.dispatch_table),
        )

        def reducer_override(self, obj: Any) -> Any:
            cls = type(obj)
            if cls is Labeled:
                return self.relabel(obj)
            if cls is types.ModuleType:
                name = obj.__name__
            elif isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
                name = getattr(obj, "__module__", None)
            else:
                name = cls.__module__
            self.record(name)
            return super().reducer_override(obj)

    _pickler_class = Pickler
    return Pickler


def __getattr__(name: str) -> Any:
    if name == "Pickler":
        return _define_pickler()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _NeedsCloudpickle(Exception):
    """What _StdPickler cannot write as Pickler would."""


# The types cloudpickle's Pickler reduces its own way (its dispatch table;
# test_serialization checks this against cloudpickle's): the standard
# pickler would write them otherwise, or not at all.
_CLOUDPICKLE_REDUCES = frozenset({
    "_io.TextIOWrapper", "_weakrefset.WeakSet", "builtins.cell", "builtins.classmethod", "builtins.code",
    "builtins.dict_items", "builtins.dict_keys", "builtins.dict_values", "builtins.getset_descriptor",
    "builtins.mappingproxy", "builtins.memoryview", "builtins.method", "builtins.module", "builtins.odict_items",
    "builtins.odict_keys", "builtins.odict_values", "builtins.property", "builtins.staticmethod",
    "abc.abstractclassmethod", "abc.abstractmethod", "abc.abstractproperty", "abc.abstractstaticmethod",
    "dataclasses._FIELD_BASE", "logging.Logger", "logging.RootLogger", "typing.TypeVar",
})


def _by_reference_here(obj: Any) -> bool:
    """Whether cloudpickle would pickle this function or class by reference
    (its module imported, not __main__, and the name finding it), as the
    standard pickler does; otherwise it travels by value."""
    module = getattr(obj, "__module__", None)
    if not module or module == "__main__" or module not in sys.modules:
        return False
    found: Any = sys.modules[module]
    for part in getattr(obj, "__qualname__", "").split("."):
        if part == "<locals>":
            return False
        found = getattr(found, part, None)
    return found is obj


class _StdPickler(_Recording, pickle.Pickler):
    """The standard pickler doing what Pickler does where no cloudpickle is
    needed (a worker that has not imported it): the same reductions, the
    same record of modules, the same bytes. What cloudpickle would write
    its own way (a function or class by value, the types of
    _CLOUDPICKLE_REDUCES) stops it with _NeedsCloudpickle, and Pickler
    writes the value instead."""

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        if cls is Labeled:
            return self.relabel(obj)
        if cls is types.FunctionType or isinstance(obj, type):
            if not _by_reference_here(obj):
                raise _NeedsCloudpickle(obj)
            name = obj.__module__
        else:
            special = _special.get(cls)
            if special is None:
                special = _special[cls] = f"{cls.__module__}.{cls.__qualname__}" in _CLOUDPICKLE_REDUCES
            if special:
                raise _NeedsCloudpickle(obj)
            name = cls.__module__ if cls is not types.BuiltinFunctionType else getattr(obj, "__module__", None)
        self.record(name)
        return NotImplemented


_special: dict[type, bool] = {}


def _pickle_with(value: Any, protocol: int | None, label: str, out: Any, reset: Any) -> Any:
    """Pickles value into out: with _StdPickler while cloudpickle is not
    imported (a worker's first calls), with Pickler if that cannot; reset
    empties out between the two. Returns the pickler used."""
    if _pickler_class is None:
        pickler = _StdPickler(out, protocol=protocol, label=label)
        try:
            pickler.dump(value)
            return pickler
        except Exception:  # noqa: BLE001 - Pickler tries again, and its error is the one that counts
            reset()
    pickler = _define_pickler()(out, protocol=protocol, label=label)
    pickler.dump(value)
    return pickler


_dists_by_module: dict[str, list[str]] | None = None
_module_dists: dict[str, tuple[tuple[str, str], ...]] = {}
_versions: dict[str, str | None] = {}


def installed_version(dist: str) -> str | None:
    """This interpreter's version of a distribution, or None; cached (an
    environment does not change under a running call)."""
    try:
        return _versions[dist]
    except KeyError:
        pass
    # Imported here, not at the top: importlib.metadata costs a worker's
    # cold start some 25 ms, and most payloads never need it.
    import importlib.metadata

    try:
        version: str | None = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = None
    _versions[dist] = version
    return version


def distributions_of(root: str) -> tuple[tuple[str, str], ...]:
    """(distribution, version) pairs that provide the top-level module root
    here; empty for modules no installed distribution provides (the caller's
    own modules, shipped by value)."""
    global _dists_by_module
    found = _module_dists.get(root)
    if found is not None:
        return found
    if _dists_by_module is None:
        import importlib.metadata

        _dists_by_module = importlib.metadata.packages_distributions()
    pairs = []
    for dist in _dists_by_module.get(root, ()):
        version = installed_version(dist)
        if version is not None and canonical(dist) not in PROVIDED:
            pairs.append((canonical(dist), version))
    found = tuple(sorted(set(pairs)))
    _module_dists[root] = found
    return found


def canonical(name: str) -> str:
    """A distribution name in PEP 503 normal form."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def manifest_of(modules: dict[str, set[str]]) -> dict[str, dict[str, Any]]:
    """{distribution: {"version", "modules", "uses"}} for the modules a
    Pickler recorded."""
    manifest: dict[str, dict[str, Any]] = {}
    for root, labels in modules.items():
        for dist, version in distributions_of(root):
            entry = manifest.setdefault(dist, {"version": version, "modules": [], "uses": []})
            entry["modules"].append(root)
            entry["uses"].extend(sorted(label for label in labels if label not in entry["uses"]))
    return manifest


def dumps(value: Any, protocol: int | None = None, label: str = "") -> tuple[bytes, dict[str, dict[str, Any]]]:
    """(payload, manifest): the manifest in front of the pickle of value."""
    with io.BytesIO() as buffer:
        buffer.write(b"\0\0\0\0")

        def reset() -> None:
            buffer.seek(_U32.size)
            buffer.truncate()

        pickler = _pickle_with(value, protocol, label, buffer, reset)
        manifest = manifest_of(pickler.modules) if pickler.modules else {}
        if not manifest:
            return buffer.getvalue(), manifest
        head = pickle.dumps(manifest, protocol=4)
        body = buffer.getbuffer()[_U32.size :]
        try:
            return b"".join((_U32.pack(len(head)), head, body)), manifest
        finally:
            body.release()


class Parts:
    """The file a Pickler writes to when its output is sent piece by piece
    (os.writev into a pipe): each write is kept as it came, by reference.
    CPython's pickler hands data of 64 KiB or more (a large bytes,
    bytearray, or an array's buffer) to its file as one write of its own,
    so a 100 MB bytes value is sent from its own memory, never copied into
    the pickle. The parts refer to the value until they are written."""

    def __init__(self, copy_mutable: bool = False) -> None:
        self.parts: list[bytes | memoryview] = []
        self.nbytes = 0
        # A caller's arguments may be sent after the call returns to the
        # caller's code (submit, map): data that could change by then (a
        # bytearray, an array) is copied, as a pickle would have; a bytes
        # value cannot change and is kept by reference.
        self.copy_mutable = copy_mutable

    def clear(self) -> None:
        self.parts, self.nbytes = [], 0

    def write(self, data: Any) -> int:
        if type(data) is bytes:
            part = data
        elif self.copy_mutable:
            part = bytes(data)
        else:
            part = pickle.PickleBuffer(data).raw()
        self.parts.append(part)
        self.nbytes += len(part)
        return len(part)


def dumps_parts(
    value: Any, protocol: int | None = None, label: str = "", copy_mutable: bool = False
) -> tuple[list[bytes | memoryview], dict[str, dict[str, Any]]]:
    """Like dumps, as a list of parts whose concatenation is the payload;
    large data in value is not copied (see Parts)."""
    out = Parts(copy_mutable)
    pickler = _pickle_with(value, protocol, label, out, out.clear)
    manifest = manifest_of(pickler.modules) if pickler.modules else {}
    head = pickle.dumps(manifest, protocol=4) if manifest else b""
    return [_U32.pack(len(head)) + head, *out.parts], manifest


# ---- loading without cloudpickle ----
#
# A pickle names the functions that rebuild its objects. A function
# pickled by value names six small cloudpickle helpers (make the function,
# set its state, make its closure's cells, import the modules it uses,
# name a builtin type); Unpickler rebuilds with its own equivalents of
# those six, which need only the standard library, and imports cloudpickle
# only for whatever else a pickle names (a class pickled by value, an
# enum, a TypeVar...). Their equivalence is tested against cloudpickle's
# own (test_serialization).


class _EmptyCell:
    """Stands for an empty closure cell (cloudpickle's _empty_cell_value)."""


_EMPTY_CELL = _EmptyCell()


def _make_function(code, globals, name, argdefs, closure):
    globals["__builtins__"] = builtins.__dict__
    return types.FunctionType(code, globals, name, argdefs, closure)


def _function_setstate(obj, state):
    # __globals__ and __closure__ cannot be set: they are filled in place.
    state, slotstate = state
    obj.__dict__.update(state)
    obj_globals = slotstate.pop("__globals__")
    obj_closure = slotstate.pop("__closure__")
    slotstate.pop("_cloudpickle_submodules")  # held only to import them
    obj.__globals__.update(obj_globals)
    obj.__globals__["__builtins__"] = builtins.__dict__
    if obj_closure is not None:
        for i, cell in enumerate(obj_closure):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            obj.__closure__[i].cell_contents = value
    for k, v in slotstate.items():
        setattr(obj, k, v)


def _make_empty_cell():
    return types.CellType()


def _make_cell(value=_EMPTY_CELL):
    return types.CellType() if value is _EMPTY_CELL else types.CellType(value)


def _subimport(name):
    __import__(name)
    return sys.modules[name]


def _builtin_type(name):
    return type if name == "ClassType" else getattr(types, name)


_REBUILDERS = {
    "_make_function": _make_function,
    "_function_setstate": _function_setstate,
    "_make_empty_cell": _make_empty_cell,
    "_make_cell": _make_cell,
    "_empty_cell_value": _EMPTY_CELL,
    "subimport": _subimport,
    "_builtin_type": _builtin_type,
}
_CLOUDPICKLE_MODULES = frozenset({"cloudpickle.cloudpickle", "cloudpickle.cloudpickle_fast"})


class Unpickler(pickle.Unpickler):
    """The standard unpickler, rebuilding functions pickled by value with
    _REBUILDERS; anything else of cloudpickle's imports cloudpickle."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _CLOUDPICKLE_MODULES:
            found = _REBUILDERS.get(name)
            if found is not None:
                return found
            cloudpickle_module()
        return super().find_class(module, name)


_other_helpers: tuple[bytes, ...] | None = None
# What needs_cloudpickle found, by payload: a function pickled anew every
# call (it uses a list, a dict...) comes out the same bytes call after call.
_needs: dict[bytes, bool] = {}
_NEEDS_KEPT = 64


def needs_cloudpickle(payload: bytes) -> bool:
    """Whether a pickle names a cloudpickle helper beyond _REBUILDERS (a
    class or enum pickled by value...), so that loading it imports
    cloudpickle. It looks for their names in the bytes: a value that
    happens to hold such a name only makes a worker import cloudpickle
    sooner."""
    global _other_helpers
    found = _needs.get(payload)
    if found is not None:
        return found
    if _other_helpers is None:
        cp = cloudpickle_module().cloudpickle
        _other_helpers = tuple(sorted(
            name.encode() for name, value in vars(cp).items()
            if (name.startswith("_") or name == "dynamic_subimport") and name not in _REBUILDERS
            and getattr(value, "__module__", None) == cp.__name__ and callable(value)
        ))
    found = b"cloudpickle" in payload and any(name in payload for name in _other_helpers)
    if len(_needs) >= _NEEDS_KEPT:
        _needs.clear()
    _needs[payload] = found
    return found


def loads(data: Any) -> Any:
    """Unpickles a pickle made by Pickler (or cloudpickle): with the
    standard unpickler, which reads data in place, once cloudpickle is
    imported or where data cannot name it (most arguments and values);
    otherwise with Unpickler, which reads a copy."""
    if _cloudpickle is not None or not _may_name_cloudpickle(data):
        return pickle.loads(data)
    return Unpickler(io.BytesIO(data)).load()


def _may_name_cloudpickle(data: Any) -> bool:
    """Whether data holds the name cloudpickle (a pickle names a module
    by it); for a memoryview, the whole buffer it is a view of is looked
    at, which can only say yes more often."""
    haystack = data.obj if isinstance(data, memoryview) else data
    try:
        return b"cloudpickle" in haystack
    except TypeError:  # a buffer that bytes cannot be looked for in
        return True


def load(file: Any) -> Any:
    """Unpickles a pickle made by Pickler (or cloudpickle) from a file."""
    if _cloudpickle is not None:
        return pickle.load(file)
    return Unpickler(file).load()


def read_manifest(read: Any) -> dict[str, dict[str, Any]]:
    """The manifest at the front of a payload read from a stream, read(n)
    returning exactly n bytes; the pickle follows it in the stream."""
    (n,) = _U32.unpack(read(_U32.size))
    if n == 0:
        return {}
    manifest = pickle.loads(read(n))
    if not isinstance(manifest, dict):
        raise pickle.UnpicklingError("manifest is not a dict")
    return manifest


def split(payload: bytes | bytearray | memoryview) -> tuple[dict[str, dict[str, Any]], memoryview]:
    """(manifest, the pickle after it), without copying the pickle."""
    view = memoryview(payload)
    if len(view) < _U32.size:
        raise pickle.UnpicklingError("payload shorter than its manifest header")
    (n,) = _U32.unpack_from(view)
    if n == 0:
        return {}, view[_U32.size :]
    end = _U32.size + n
    if end > len(view):
        raise pickle.UnpicklingError("manifest longer than its payload")
    manifest = pickle.loads(view[_U32.size : end])
    if not isinstance(manifest, dict):
        raise pickle.UnpicklingError("manifest is not a dict")
    return manifest, view[end:]


class Mismatch:
    """One distribution a pickle refers to whose version differs here."""

    __slots__ = ("distribution", "sender_version", "local_version", "uses", "modules")

    def __init__(self, distribution: str, sender_version: str, local_version: str | None, uses: list[str], modules: list[str]):
        self.distribution = distribution
        self.sender_version = sender_version
        self.local_version = local_version
        self.uses = uses
        self.modules = modules

    @property
    def major_differs(self) -> bool:
        return self.local_version is None or _major(self.local_version) != _major(self.sender_version)


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def mismatches(manifest: dict[str, dict[str, Any]]) -> list[Mismatch]:
    """The manifest's distributions that are missing here or of another
    version, checked before unpickling."""
    found = []
    for dist, entry in manifest.items():
        want = str(entry.get("version", ""))
        have = installed_version(dist)
        if have != want:
            found.append(Mismatch(dist, want, have, list(entry.get("uses", [])), list(entry.get("modules", []))))
    return found


def culprit(found: list[Mismatch], error: BaseException | None) -> Mismatch:
    """The mismatch that most likely broke unpickling: the one whose module
    the error names, else a missing distribution, else the first."""
    named = getattr(error, "name", None) or (str(error) if error is not None else "")
    for m in found:
        if any(named == mod or named.startswith(mod + ".") or f"'{mod}." in named or f"'{mod}'" in named for mod in m.modules):
            return m
    for m in found:
        if m.local_version is None:
            return m
    return found[0]


def explain(
    m: Mismatch, error: BaseException | None, *, what: str, to_worker: bool, plain: str, others: list[Mismatch] = ()
) -> str:
    """The message for a pickle that cannot load (or failed to, with error):
    what it is, the distribution, both versions and the fix.

    what names the pickle ("the arguments of f"), and each use the manifest
    recorded is named instead where known ("argument 0 of f"); to_worker
    says which way it travelled; plain is the "convert to plain data" fix;
    others are further mismatches of the same pickle, pinned in the fix too
    (a pandas frame carries numpy arrays: both must match)."""
    uses = " and ".join(u for u in m.uses if u) or what
    d, sent = m.distribution, m.sender_version
    here, there = ("here", "in the worker") if to_worker else ("in the worker", "here")
    receiver = "the worker's environment" if to_worker else "this interpreter"
    if m.local_version is None:
        text = f"{uses} refers to {d}, which {receiver} lacks ({d} {sent} {here})"
    else:
        text = (
            f"{uses} could not be unpickled {there}: it was pickled with {d} {sent} {here}, "
            f"and {receiver} has {d} {m.local_version}"
        )
    if error is not None:
        text += f" ({type(error).__name__}: {error})"
    pin = " and ".join(f'"{x.distribution}=={x.sender_version}"' for x in [m, *(o for o in others if o is not m)])
    if to_worker:
        fix = f"add {pin} to the function's requirements, or {plain}"
    elif m.local_version is None:
        fix = f"install {pin} here, or {plain}"
    else:
        want = " and ".join(
            f'"{x.distribution}=={x.local_version}"' for x in [m, *(o for o in others if o is not m)] if x.local_version
        )
        fix = f"install {pin} here, require {want} in the function's requirements, or {plain}"
    return f"{text}. Fix: {fix}."


_warned: set[tuple[str, str, str]] = set()


def warn_loaded(found: list[Mismatch], what: str, *, to_worker: bool) -> None:
    """Warns once on stderr, per distribution and pair of versions, about a
    pickle that loaded although its major versions differ."""
    sender, receiver = ("by the caller", "in the worker") if to_worker else ("in the worker", "here")
    for m in found:
        key = (m.distribution, m.sender_version, str(m.local_version))
        if m.local_version is None or not m.major_differs or key in _warned:
            continue
        _warned.add(key)
        uses = " and ".join(u for u in m.uses if u) or what
        print(
            f"atoll: {uses} was pickled with {m.distribution} {m.sender_version} {sender} and loaded "
            f"{receiver} with {m.distribution} {m.local_version}; pin the same version on both sides "
            "if its values look wrong",
            file=sys.stderr,
        )


# ---- the function's own pickle, kept while nothing it is made of changed ----

_code_globals: Any = None
_by_reference: Any = None
_by_value_modules: Any = None
_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis))
_MISSING = object()


def function_state(fn: Any) -> list[Any] | None:
    """Everything fn's pickle by value is made of, as a list of the objects
    themselves, or None when part of it could change without any of them
    being replaced (a list, a dict, an instance, a class pickled by value):
    such a function is pickled anew every call.

    Two states whose items are the same objects (``is``) give the same
    pickle: a function's code, names, defaults, attributes, annotations,
    closure cells' contents and the globals its code uses; each of those an
    immutable value, a tuple or frozenset of them, or a module, class or
    function that travels by reference (its name) or a function that
    travels by value, whose own state is part of this one. The state
    holds the objects, so none of them is freed and its id reused while it
    is kept; what decides how things travel (the modules registered to
    travel by value, sys.modules) is part of it too."""
    global _code_globals, _by_reference, _by_value_modules
    if _code_globals is None:
        cp = cloudpickle_module().cloudpickle
        _code_globals = getattr(cp, "_extract_code_globals", False)
        _by_reference = getattr(cp, "_should_pickle_by_reference", False)
        _by_value_modules = getattr(cp, "_PICKLE_BY_VALUE_MODULES", False)
    if not _code_globals or not _by_reference or _by_value_modules is False:
        return None  # a cloudpickle without these internals: no cache
    if type(fn) is not types.FunctionType:
        return None  # a partial, a callable object: pickled every call
    state: list[Any] = [(len(sys.modules), len(_by_value_modules))]
    return state if _add_function(fn, state, set()) else None


def same_state(a: list[Any], b: list[Any]) -> bool:
    """Whether two function_state lists are of the same objects."""
    return len(a) == len(b) and a[0] == b[0] and all(x is y for x, y in zip(a[1:], b[1:]))


def _add_function(fn: Any, state: list[Any], seen: set[int]) -> bool:
    if id(fn) in seen:
        state.append(fn)
        return True
    seen.add(id(fn))
    code = fn.__code__
    state += (fn, code, fn.__name__, fn.__qualname__, fn.__module__, fn.__doc__, fn.__defaults__)
    for mapping in (fn.__kwdefaults__, fn.__dict__, fn.__annotations__):
        if mapping:
            for key, value in mapping.items():
                state += (key, value)
                if not _unchanging(value, state, seen):
                    return False
        else:
            state.append(mapping)
    if not _unchanging(fn.__defaults__, state, seen):
        return False
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            value = _MISSING
        state.append(value)
        if value is not _MISSING and not _unchanging(value, state, seen):
            return False
    names = fn.__globals__
    for name in _code_globals(code):
        value = names.get(name, _MISSING)
        state += (name, value)
        if value is not _MISSING and not _unchanging(value, state, seen):
            return False
    return True


def _unchanging(value: Any, state: list[Any], seen: set[int]) -> bool:
    cls = type(value)
    if cls in _IMMUTABLE:
        return True
    if cls is tuple or cls is frozenset:
        return all(_unchanging(item, state, seen) for item in value)
    if cls is types.FunctionType:
        return _by_reference(value) or _add_function(value, state, seen)
    if cls is types.BuiltinFunctionType:
        return True  # pickled by name
    if cls is types.ModuleType or isinstance(value, type):
        return _by_reference(value)
    return False
