"""The decorator's contract, checked at decoration time (no server needed)."""

from __future__ import annotations

import pickle

import cloudpickle
import pytest

import atoll
from atoll import CloudKeyCredentials, IsolatedFunction, cloud, isolated, local


def f():
    return 1


def test_public_names():
    for name in ["isolated", "IsolatedFunction", "cached", "local", "cloud", "CloudKeyCredentials", "AtollError"]:
        assert hasattr(atoll, name), name
    for cls in [atoll.SerializationError, atoll.WorkerCrashedError, atoll.OutOfMemoryError,
                atoll.EnvironmentBuildError, atoll.AuthenticationError, atoll.MachineTypeError,
                atoll.NoCapacityError, atoll.ServerUnavailableError, atoll.RemoteError]:
        assert issubclass(cls, atoll.AtollError)


def test_defaults():
    g = isolated()(f)
    assert isinstance(g, IsolatedFunction)
    assert g.options.machine_type == "XS"
    assert g.options.keep_alive == 10
    assert g.options.requirements == ()
    assert g.options.host is cloud
    assert g.__name__ == "f"


def test_without_parentheses_works_with_defaults():
    g = isolated(f)
    assert isinstance(g, IsolatedFunction)
    assert g.options.keep_alive == 10


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"machine": "M"}, TypeError, r"unknown option\(s\) 'machine'.*machine_type"),
        ({"requirements": "pyjokes"}, TypeError, "list of strings"),
        ({"requirements": ["ok", 3]}, TypeError, "non-empty string"),
        ({"machine_type": 2}, TypeError, "machine_type"),
        ({"keep_alive": "10"}, TypeError, "keep_alive"),
        ({"keep_alive": True}, TypeError, "keep_alive"),
        ({"keep_alive": -1}, ValueError, "0 or more"),
        ({"host": "cloud"}, TypeError, "host"),
        ({"credentials": ("id", "secret")}, TypeError, "CloudKeyCredentials"),
    ],
)
def test_bad_options_fail_at_decoration(options, error, match):
    with pytest.raises(error, match=match):
        isolated(**options)


def test_positional_non_function_is_a_clear_error():
    with pytest.raises(TypeError, match="keywords only"):
        isolated(["pyjokes"])


def test_on_overrides_and_leaves_original_unchanged():
    g = isolated(requirements=["six"], machine_type="M", keep_alive=3)(f)
    h = g.on(machine_type="L")
    assert h is not g
    assert (g.options.machine_type, h.options.machine_type) == ("M", "L")
    assert h.options.requirements == ("six",) and h.options.keep_alive == 3
    loc = g.on(local)
    assert loc.options.host is local and g.options.host is cloud
    back = loc.on(cloud, machine_type="M")
    assert back.options.host is cloud and back.options.machine_type == "M"
    with pytest.raises(TypeError, match="unknown option"):
        g.on(nope=1)


def test_isolated_with_host_local():
    g = isolated(host=local)(f)
    assert g.options.host is local


def test_credentials_do_not_travel_with_a_pickled_function():
    creds = CloudKeyCredentials("ak_id", "very-secret-value")
    g = isolated(credentials=creds)(f)
    data = cloudpickle.dumps(g)
    assert b"very-secret-value" not in data
    restored = pickle.loads(data)
    assert restored.options.credentials is None
    assert "very-secret-value" not in repr(creds)


def test_credentials_require_strings():
    with pytest.raises(TypeError):
        CloudKeyCredentials("", "x")
