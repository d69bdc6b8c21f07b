"""Attack 7 of the trust boundary: the runner's own packages (cloudpickle,
grpcio, protobuf, typing_extensions) must not show in the user's
environment. Inside a worker, importlib.metadata, pip and imports see the
requirements alone (pip is the server's seed); a user's pin of another
version of any of the runner's packages is what the function gets, and
calls still work. Importing atoll (a nested call) is asking for them."""

from __future__ import annotations

import pytest

from atoll import isolated
from conftest import Server


def view(modules):
    """In the worker: the distributions, pip's list, and for each module
    its version or the ImportError."""
    import importlib
    import importlib.metadata
    import subprocess
    import sys

    found = {}
    for name in modules:
        try:
            module = importlib.import_module(name)
            found[name] = getattr(module, "__version__", "?")
        except ImportError as e:
            found[name] = f"ImportError: {e}"
    pip = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True)
    return {
        "distributions": sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions()),
        "pip": sorted(line.split("==")[0].lower() for line in pip.stdout.split()),
        "modules": found,
    }


RUNNER_MODULES = ["cloudpickle", "grpc", "google.protobuf", "typing_extensions"]


def test_environment_shows_only_its_requirements(server: Server):
    seen = isolated(requirements=["pyjokes"], keep_alive=0)(view)(RUNNER_MODULES)
    assert seen["distributions"] == ["pip", "pyjokes"], seen
    assert seen["pip"] == ["pip", "pyjokes"], seen
    for name in RUNNER_MODULES:
        assert seen["modules"][name].startswith("ImportError"), seen["modules"]


@pytest.mark.parametrize(
    "pin, module, version",
    [
        ("cloudpickle==2.2.1", "cloudpickle", "2.2.1"),
        ("grpcio==1.60.0", "grpc", "1.60.0"),
        ("protobuf==4.25.3", "google.protobuf", "4.25.3"),
    ],
)
def test_user_pin_of_a_runner_package(server: Server, pin, module, version):
    """The pinned version is what the function imports and what metadata
    says; the call itself (pickled with the caller's cloudpickle, run by
    the runner's) works, a closure and an exception included."""
    dist = pin.split("==")[0]
    fn = isolated(requirements=[pin], keep_alive=10)

    seen = fn(view)([module])
    assert seen["modules"][module] == version, seen
    assert dist in seen["distributions"] and dist in seen["pip"], seen
    assert not set(seen["distributions"]) - {"pip", dist}, seen

    base = 40
    assert fn(lambda x: x + base)(2) == 42

    def fails():
        raise KeyError("from the worker")

    with pytest.raises(KeyError, match="from the worker"):
        fn(fails)()


def helper() -> str:
    return "nested"


def test_importing_atoll_asks_for_the_runtime(server: Server):
    """A nested call works: importing atoll puts the runner's packages
    behind the environment's. Here atoll is imported while the runner
    unpickles the outer function (it refers to an isolated function), and
    the inner one refers to a function the runner rebuilt (helper, pickled
    by value), which only the very cloudpickle that rebuilt it pickles
    again."""
    inner = isolated(keep_alive=0)(lambda: helper())

    @isolated(keep_alive=0)
    def outer():
        import importlib.util

        return inner(), importlib.util.find_spec("grpc") is not None

    @isolated(keep_alive=0)
    def imports_atoll_itself():
        import importlib.util

        before = importlib.util.find_spec("grpc") is None
        from atoll import isolated as nested

        return before, nested(keep_alive=0)(lambda: helper())()

    assert outer() == ("nested", True)
    assert imports_atoll_itself() == (True, "nested")
