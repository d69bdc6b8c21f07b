"""The serialization corpus: real cases from the trackers of tools of this
kind, each asserting the error type, that the message names the culprit, and
that it names the fix (or that the case just works).

The caller runs numpy 2, pandas 3 and pydantic 2 (python/requirements.lock);
workers get other versions through their requirements, built by a real
server with uv from the package index."""

from __future__ import annotations

import dataclasses
import enum
import socket
import sqlite3
import sys
import textwrap
import threading
import weakref

import numpy as np
import pandas as pd
import pydantic
import pytest

import atoll
from atoll import _pickling, isolated
from atoll._host import CloudHost
from conftest import free_port

NUMPY1 = ["numpy==1.26.4"]
PANDAS1 = ["pandas==1.5.3", "numpy==1.26.4"]

# A server address where nothing listens: a call that gets past the caller's
# own checks fails with ServerUnavailableError instead.
NOWHERE = CloudHost(f"127.0.0.1:{free_port()}")


class Color(enum.Enum):
    RED = 1
    GREEN = 2


@dataclasses.dataclass
class Point:
    x: float
    y: float


class Holder:
    def __init__(self, value):
        self.value = value


class Model(pydantic.BaseModel):
    name: str
    size: int


class BadReduce:
    def __reduce__(self):
        raise RuntimeError("BadReduce refuses to be pickled")


def _not_sent(fn, *args, **kwargs):
    """Calls fn on a host where nothing listens: only an error raised before
    anything is sent can come out of it."""
    with pytest.raises(atoll.SerializationError) as info:
        fn.on(NOWHERE)(*args, **kwargs)
    return info.value


# Version mismatches: named, with both versions and the fix.


def test_numpy2_array_to_a_numpy1_worker(server):
    @isolated(requirements=NUMPY1)
    def total(a):
        return float(a.sum())

    with pytest.raises(atoll.VersionMismatchError) as info:
        total(np.arange(4.0))
    err = info.value
    message = str(err)
    assert "argument 0 of" in message and "total" in message, message
    assert f"numpy {np.__version__}" in message and "numpy 1.26.4" in message, message
    assert f'Fix: add "numpy=={np.__version__}" to the function\'s requirements' in message, message
    assert "plain data" in message, message
    assert (err.distribution, err.local_version, err.remote_version) == ("numpy", np.__version__, "1.26.4")
    assert isinstance(err, atoll.SerializationError)


def test_numpy1_array_back_to_a_numpy2_caller_loads_and_warns(server, capfd):
    @isolated(requirements=NUMPY1)
    def make():
        import numpy

        return numpy.arange(3)

    assert make().tolist() == [0, 1, 2]
    err = capfd.readouterr().err
    # Loaded (numpy 2 reads numpy 1 pickles), with one warning naming both.
    assert "numpy 1.26.4 in the worker" in err and f"numpy {np.__version__}" in err, err


def test_pandas_dataframe_to_an_older_pandas_worker(server):
    @isolated(requirements=PANDAS1)
    def rows(*, df):
        return len(df)

    with pytest.raises(atoll.VersionMismatchError) as info:
        rows(df=pd.DataFrame({"a": [1, 2, 3]}))
    message = str(info.value)
    assert "keyword argument 'df' of" in message, message
    # The frame's numpy arrays break first; the fix pins both.
    assert info.value.distribution == "numpy", message
    assert f"numpy {np.__version__} here" in message and "numpy 1.26.4" in message, message
    assert f'add "numpy=={np.__version__}" and "pandas=={pd.__version__}"' in message, message


def test_pandas_dataframe_from_an_older_pandas_worker_loads_and_warns(server, capfd):
    @isolated(requirements=PANDAS1)
    def frame():
        import pandas

        return pandas.DataFrame({"a": [1, 2, 3]})

    # pandas reads its older pickles: allowed, with a warning naming both.
    assert frame()["a"].tolist() == [1, 2, 3]
    err = capfd.readouterr().err
    assert "pandas 1.5.3 in the worker" in err and f"pandas {pd.__version__}" in err, err


def test_pydantic_model_to_a_worker_without_pydantic_is_refused_before_sending():
    @isolated()
    def size(m):
        return m.size

    err = _not_sent(size, Model(name="x", size=3))
    assert isinstance(err, atoll.VersionMismatchError)
    message = str(err)
    assert "argument 0 of" in message and "pydantic" in message, message
    assert f'add "pydantic=={pydantic.VERSION}"' in message, message


def test_pydantic_model_to_a_worker_with_the_same_pydantic_works(server):
    @isolated(requirements=[f"pydantic=={pydantic.VERSION}"])
    def grow(m):
        return m.model_copy(update={"size": m.size + 1})

    assert grow(Model(name="x", size=3)) == Model(name="x", size=4)


def test_function_using_a_module_its_requirements_lack_is_refused_before_sending():
    @isolated()
    def mean(values):
        return np.mean(values)

    err = _not_sent(mean, [1, 2])
    assert isinstance(err, atoll.VersionMismatchError)
    message = str(err)
    assert "function" in message and "mean" in message and "refers to numpy" in message, message
    assert f'add "numpy=={np.__version__}"' in message and "import it inside the function" in message, message


def test_return_value_of_a_package_the_caller_lacks(server):
    @isolated(requirements=["pyjokes==0.8.3"])
    def joker():
        import pyjokes

        return pyjokes.get_joke

    with pytest.raises(atoll.VersionMismatchError) as info:
        joker()
    message = str(info.value)
    assert "the return value of" in message and "pyjokes" in message, message
    assert "which this interpreter lacks" in message, message
    assert 'install "pyjokes==0.8.3" here' in message and "return plain data" in message, message


def test_exception_class_the_caller_cannot_import_is_a_remote_error(server):
    @isolated()
    def fail():
        import pathlib
        import sys

        pathlib.Path("/tmp/worker_only_errors.py").write_text("class WorkerOnly(Exception):\n    pass\n")
        sys.path.insert(0, "/tmp")
        import worker_only_errors

        raise worker_only_errors.WorkerOnly("only the worker knows this type")

    with pytest.raises(atoll.RemoteError) as info:
        fail()
    assert info.value.type_name == "worker_only_errors.WorkerOnly"
    assert info.value.remote_message == "only the worker knows this type"


def test_exception_of_a_package_the_caller_lacks_names_it(server):
    @isolated(requirements=["pyjokes==0.8.3"])
    def joke_in(language):
        import pyjokes

        return pyjokes.get_joke(language=language)

    with pytest.raises(atoll.RemoteError) as info:
        joke_in("klingon")
    err = info.value
    assert err.type_name == "pyjokes.exc.LanguageNotFoundError", err.type_name
    # Kept as a RemoteError (its class cannot be imported here), and it says
    # why: the distribution, its worker version, and the fix.
    assert "the exception refers to pyjokes, which this interpreter lacks" in err.reason, err.reason
    assert 'install "pyjokes==0.8.3" here' in str(err), str(err)


# Objects that cannot be pickled: the path to the culprit, before sending.


def test_lambda_closing_over_a_lock():
    lock = threading.Lock()
    fn = isolated()(lambda: lock.locked())
    with pytest.raises(atoll.SerializationError) as info:
        fn.on(NOWHERE)()
    message = str(info.value)
    assert "the variable 'lock' it closes over is a _thread.lock" in message, message
    assert "Create it inside the function" in message, message


def test_generator_object_argument():
    @isolated()
    def consume(g):
        return list(g)

    message = str(_not_sent(consume, (i for i in range(3))))
    assert "argument 0 of" in message and "args[0] is a generator" in message, message


def test_open_file_argument(tmp_path):
    @isolated()
    def write(f):
        f.write("x")

    with open(tmp_path / "out.txt", "w") as f:
        message = str(_not_sent(write, f))
    assert "args[0] is a _io.TextIOWrapper" in message, message


def test_sqlite_connection_deep_inside_a_dict():
    @isolated()
    def query(config):
        return config

    conn = sqlite3.connect(":memory:")
    try:
        message = str(_not_sent(query, {"name": "db", "db": {"path": ":memory:", "conn": conn}}))
    finally:
        conn.close()
    assert "args[0]['db']['conn'] is a sqlite3.Connection: it cannot be pickled" in message, message


def test_custom_reduce_that_raises():
    @isolated()
    def take(x):
        return x

    message = str(_not_sent(take, [1, BadReduce()]))
    assert "args[0][1] is a test_serialization.BadReduce" in message, message
    assert "BadReduce refuses to be pickled" in message, message


def test_recursion_limit_exceeded_while_pickling():
    nested: list = []
    for _ in range(sys.getrecursionlimit() * 3):
        nested = [nested]

    @isolated()
    def depth(x):
        return 0

    message = str(_not_sent(depth, nested))
    assert "args[0]" in message and "nested too deeply" in message and "sys.setrecursionlimit" in message, message


def test_attribute_of_an_object_that_cannot_be_pickled():
    @isolated()
    def value_of(h):
        return h.value

    message = str(_not_sent(value_of, Holder(threading.Lock())))
    assert "args[0].value is a _thread.lock" in message, message


def test_keyword_argument_that_cannot_be_pickled():
    @isolated()
    def call(*, sock):
        return sock

    with socket.socket() as sock:
        message = str(_not_sent(call, sock=sock))
    assert "keyword argument 'sock' of" in message and "kwargs['sock'] is a socket.socket" in message, message


def test_thread_object_argument():
    @isolated()
    def join(t):
        t.join()

    message = str(_not_sent(join, threading.Thread(target=print)))
    assert "argument 0 of" in message and "args[0]" in message and "cannot be pickled" in message, message


def test_weakref_argument():
    @isolated()
    def deref(r):
        return r()

    target = Holder(1)
    message = str(_not_sent(deref, weakref.ref(target)))
    assert "args[0] is a weakref.ReferenceType" in message or "args[0] is a weakref" in message, message


def test_default_argument_that_cannot_be_pickled():
    lock = threading.Lock()

    def guarded(x, lock=lock):
        return x

    message = str(_not_sent(isolated()(guarded), 1))
    assert "its default argument #0 is a _thread.lock" in message, message


def test_unpicklable_return_value_names_the_function(server):
    @isolated()
    def gen():
        return (i for i in range(3))

    with pytest.raises(atoll.SerializationError) as info:
        gen()
    message = str(info.value)
    assert "return value of" in message and "gen" in message and "generator" in message, message


# What must just work.


def test_class_from_a_local_module_travels_by_value(server, tmp_path, monkeypatch):
    (tmp_path / "shapes_local.py").write_text(
        textwrap.dedent(
            """\
            class Square:
                def __init__(self, side):
                    self.side = side

                def area(self):
                    return self.side ** 2
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import shapes_local

    @isolated()
    def area(s):
        return s.area()

    assert area(shapes_local.Square(3)) == 9


def test_enum_and_dataclass_from_the_callers_script(server):
    @isolated()
    def flip(color, point):
        return (Color.GREEN if color is Color.RED else Color.RED), Point(point.y, point.x)

    color, point = flip(Color.RED, Point(1.0, 2.0))
    assert color.name == "GREEN" and color.value == 2
    assert (point.x, point.y) == (2.0, 1.0)


def test_module_object_argument(server):
    import json

    @isolated()
    def encode(module, value):
        return module.dumps(value)

    assert encode(json, [1, 2]) == "[1, 2]"


def test_100mb_nested_structure(server):
    chunks = {"parts": [bytes([i]) * 1_000_000 for i in range(100)], "meta": {"n": 100}}

    @isolated(machine_type="S")
    def measure(data):
        return sum(len(p) for p in data["parts"]), data["meta"]["n"]

    assert measure(chunks) == (100_000_000, 100)


def test_plain_arguments_carry_an_empty_manifest():
    payload, manifest = _pickling.dumps(([_pickling.Labeled("argument 0", 1), _pickling.Labeled("argument 1", "x")], {}))
    assert manifest == {}
    assert payload[:4] == b"\0\0\0\0"
    assert _pickling.split(payload)[0] == {}


def test_manifest_names_each_argument_and_its_distribution():
    _, manifest = _pickling.dumps(
        ([_pickling.Labeled("argument 0", 1), _pickling.Labeled("argument 1", np.zeros(2))], {"df": _pickling.Labeled("keyword argument 'df'", pd.DataFrame())})
    )
    assert manifest["numpy"]["version"] == np.__version__
    assert "argument 1" in manifest["numpy"]["uses"] and "argument 0" not in manifest["numpy"]["uses"]
    assert manifest["pandas"]["uses"] == ["keyword argument 'df'"]


def test_a_malformed_manifest_is_an_error_not_a_crash():
    with pytest.raises(Exception, match="manifest longer than its payload"):
        _pickling.split(b"\0\0\1\0" + b"x" * 10)
    with pytest.raises(Exception, match="shorter than its manifest header"):
        _pickling.split(b"\0")



def _dynamic(source: str) -> dict:
    """Functions defined in a module of their own that cannot be imported,
    so they travel by value like those of a caller's script."""
    namespace = {"__name__": "atoll_test_dynamic"}
    exec(textwrap.dedent(source), namespace)
    return namespace


def _run(payload: bytes, *args):
    import cloudpickle

    _manifest, body = _pickling.split(payload)
    return cloudpickle.loads(body)(*args)


def test_a_functions_pickle_is_kept_while_nothing_it_is_made_of_changes():
    from atoll._serialize import FunctionPickle

    ns = _dynamic(
        """
        import os
        X = 1.5
        def helper():
            return X
        def f(a, b=2):
            return (a, b, helper(), os.sep)
        """
    )
    pickle = FunctionPickle(ns["f"])
    # The first pickling in a process may import modules, or register the
    # caller's to travel by value, which changes the state once.
    first = [pickle.get() for _ in range(3)][-1]
    assert pickle.get() is first  # kept, not pickled again
    assert _run(first, 1) == (1, 2, 1.5, "/")
    ns["X"] = 2.5  # a global of a function it calls, rebound: the old float is kept alive, its id not reused
    assert _run(pickle.get(), 1) == (1, 2, 2.5, "/")
    ns["f"].__defaults__ = (3,)
    assert _run(pickle.get(), 1) == (1, 3, 2.5, "/")
    ns["helper"] = lambda: "replaced"
    assert _run(pickle.get(), 1) == (1, 3, "replaced", "/")
    again = pickle.get()
    assert pickle.get() is again


def test_a_function_using_something_mutable_is_pickled_every_call():
    from atoll._serialize import FunctionPickle

    ns = _dynamic(
        """
        SEEN = []
        class Box:
            value = 1
        def f():
            return list(SEEN), Box.value
        """
    )
    pickle = FunctionPickle(ns["f"])
    assert _run(pickle.get()) == ([], 1)
    ns["SEEN"].append("mutated in place")
    ns["Box"].value = 2  # a class travelling by value: its attributes can change
    assert _run(pickle.get()) == (["mutated in place"], 2)
    assert pickle._kept is None


def test_a_closures_rebound_variable_reaches_the_next_pickle():
    from atoll._serialize import FunctionPickle

    def make():
        count = 0

        def f():
            return count

        def bump():
            nonlocal count
            count += 1

        return f, bump

    f, bump = make()
    pickle = FunctionPickle(f)
    assert _run(pickle.get()) == 0
    bump()
    assert _run(pickle.get()) == 1
    f.tag = "an attribute"
    import cloudpickle

    assert cloudpickle.loads(_pickling.split(pickle.get())[1]).tag == "an attribute"


# ---- a worker's first call loads without cloudpickle (see _pickling) ----

_FUNCTION_BY_VALUE = """
    import os.path

    SCALE = 3

    def make():
        offset = 5

        def add(a, b=2, *, c=4) -> int:
            "adds"
            return (a + b + c + offset) * SCALE + len(os.path.join("x", "y")) + (add.tag == "t")

        def later():
            return unset

        add.tag = "t"
        return add, later
        unset = 1  # never reached: later's cell stays empty
"""

# Loads a function's pickle the way a worker's runner does (_pickling by
# path, no atoll package) where cloudpickle cannot be imported at all.
_LOAD_WITHOUT_CLOUDPICKLE = """
import importlib.abc, importlib.util, json, sys

class NoCloudpickle(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "cloudpickle":
            raise ImportError("cloudpickle is not importable here")

sys.meta_path.insert(0, NoCloudpickle())
spec = importlib.util.spec_from_file_location("atoll_pickling", sys.argv[1])
pickling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pickling)
add, later = pickling.loads(pickling.split(sys.stdin.buffer.read())[1])
try:
    later()
    empty = "no error"
except NameError as exc:
    empty = type(exc).__name__
print(json.dumps({
    "result": add(1), "defaults": add.__defaults__, "kwdefaults": add.__kwdefaults__,
    "name": add.__qualname__, "doc": add.__doc__, "module": add.__module__,
    "annotations": add.__annotations__, "tag": add.tag, "empty_cell": empty,
    "imported": sorted(n for n in ("cloudpickle", "dataclasses", "inspect") if n in sys.modules),
}))
"""


def _describe(add, later) -> dict:
    try:
        later()
        empty = "no error"
    except NameError as exc:
        empty = type(exc).__name__
    return {
        "result": add(1), "defaults": list(add.__defaults__), "kwdefaults": add.__kwdefaults__,
        "name": add.__qualname__, "doc": add.__doc__, "module": add.__module__,
        "annotations": add.__annotations__, "tag": add.tag, "empty_cell": empty, "imported": [],
    }


def test_a_function_pickled_by_value_loads_as_cloudpickle_loads_it_without_cloudpickle():
    import json
    import subprocess

    import cloudpickle

    payload, _ = _pickling.dumps(_dynamic(_FUNCTION_BY_VALUE)["make"]())
    expected = _describe(*cloudpickle.loads(_pickling.split(payload)[1]))
    assert expected["empty_cell"] == "NameError" and expected["result"] == (1 + 2 + 4 + 5) * 3 + 3 + 1
    out = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_CLOUDPICKLE, _pickling.__file__],
                         input=payload, capture_output=True, check=True).stdout
    assert json.loads(out) == expected


def test_a_pickle_naming_other_cloudpickle_helpers_imports_cloudpickle():
    import subprocess

    ns = _dynamic("""
        class Point:  # a class pickled by value
            def __init__(self, x):
                self.x = x

        def make():
            return Point(2)
    """)
    payload, _ = _pickling.dumps(ns["make"])
    script = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('atoll_pickling', sys.argv[1])\n"
        "pickling = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(pickling)\n"
        "make = pickling.loads(pickling.split(sys.stdin.buffer.read())[1])\n"
        "print(make().x, 'cloudpickle' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, _pickling.__file__], input=payload, capture_output=True, check=True)
    assert out.stdout.split() == [b"2", b"True"], out.stderr


def _pickled_by(cls, value) -> bytes:
    import io

    out = io.BytesIO()
    cls(out).dump(value)
    return out.getvalue()


@pytest.mark.parametrize("value", [
    None, True, 7, 2**100, -1.5, 1j, "text", b"bytes", b"x" * (1 << 17), bytearray(b"ba"), (1, "a", (None,)),
    [1, [2, [3]]], {"a": {1, 2}, 3: frozenset({4})}, list(range(5000)), np.arange(6).reshape(2, 3),
    pd.DataFrame({"a": [1, 2]}), enum.Enum, socket.AF_INET, dataclasses.MISSING.__class__,
    sys.getsizeof, textwrap.dedent, threading.Lock,
])
def test_what_needs_no_cloudpickle_is_pickled_byte_for_byte_as_cloudpickle_would(value):
    std = _pickled_by(_pickling._StdPickler, value)
    assert std == _pickled_by(_pickling.Pickler, value)


@pytest.mark.parametrize("value", [
    lambda: 1, _dynamic("class Local:\n    pass\n")["Local"], [_dynamic("def f():\n    return 1\n")["f"]],
    sys, {"k": {}.keys()}, property(len), weakref.WeakSet(), __import__("logging").getLogger("x"),
])
def test_what_cloudpickle_writes_its_own_way_goes_through_cloudpickle(value):
    with pytest.raises(_pickling._NeedsCloudpickle):
        _pickled_by(_pickling._StdPickler, value)
    # and dumps, falling back, writes it as Pickler does
    assert _pickling.dumps(value)[0][4:] == _pickled_by(_pickling.Pickler, value)


def test_the_types_cloudpickle_reduces_its_own_way_are_all_known():
    import cloudpickle

    table = cloudpickle.Pickler._dispatch_table
    assert {f"{t.__module__}.{t.__qualname__}" for t in table} <= _pickling._CLOUDPICKLE_REDUCES


def test_a_new_workers_first_call_of_importable_data_imports_no_cloudpickle(server):
    import datetime

    @isolated(keep_alive=5)
    def imported(day):
        import sys

        return sorted(n for n in ("cloudpickle", "dataclasses", "inspect", "typing") if n in sys.modules), day + datetime.timedelta(days=1)

    # Each of these would be there had the runner imported its cloudpickle
    # (which it keeps out of the function's view, but not what it imports).
    assert imported(datetime.date(2026, 12, 7)) == ([], datetime.date(2026, 12, 8))


def test_a_pickle_needing_cloudpickle_is_told_from_one_that_does_not():
    ns = _dynamic("""
        class Point:
            pass

        def with_class():
            return Point()

        def plain(x=1):
            import os
            return os.sep * x
    """)
    assert _pickling.needs_cloudpickle(_pickling.dumps(ns["with_class"])[0])
    assert not _pickling.needs_cloudpickle(_pickling.dumps(ns["plain"])[0])


class _ByValue:
    """A class of this test module, which workers cannot import: it travels
    by value, and so does a function that uses it."""


def test_a_function_whose_pickle_needs_cloudpickle_has_its_worker_import_it_as_it_starts(server):
    # The runner's command line says what it imported before it was ready.
    @isolated(keep_alive=5)
    def uses_a_class():
        _ByValue()
        return open("/proc/self/cmdline", "rb").read().split(b"\0")

    @isolated(keep_alive=5)
    def plain():
        return open("/proc/self/cmdline", "rb").read().split(b"\0")

    assert b"cloudpickle" in uses_a_class()[-3:]
    assert b"cloudpickle" not in plain()[-3:]


def test_a_pickle_that_cannot_name_cloudpickle_is_read_in_place(monkeypatch):
    # Arguments and values (most payloads) load with the standard
    # unpickler, which needs no copy of them; only a pickle that may name
    # cloudpickle goes through Unpickler.
    monkeypatch.setattr(_pickling, "_cloudpickle", None)

    def refuse(*_):
        raise AssertionError("Unpickler was used")

    monkeypatch.setattr(_pickling, "Unpickler", refuse)
    payload, _ = _pickling.dumps(((1, "two", b"x" * 100_000), {"k": [3.5]}))
    assert _pickling.loads(_pickling.split(payload)[1]) == ((1, "two", b"x" * 100_000), {"k": [3.5]})
    function, _ = _pickling.dumps(_dynamic("def f():\n    return 1\n")["f"])
    with pytest.raises(AssertionError, match="Unpickler was used"):
        _pickling.loads(_pickling.split(function)[1])
