"""Large arguments and return values: they cross the server, the agent and
the runner without whole extra copies, so that a 100 MB argument fits a
worker whose memory limit is 256 MiB (XS), sandboxed and enforced."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import sys
import threading

import pytest

import atoll
from atoll import _pickling, isolated
from conftest import require_sandbox

MB = 1_000_000


@pytest.fixture
def sandboxed(server):
    require_sandbox(server)
    return server


def test_100mb_argument_round_trip_on_xs(sandboxed):
    payload = os.urandom(100 * MB)

    @isolated(machine_type="XS", keep_alive=30)
    def echo(data):
        return data

    @isolated(machine_type="XS", keep_alive=30)
    def hog(mb):
        # Touches every page, so the memory is really used.
        blocks = [b"\1" * 1_000_000 for _ in range(mb)]
        return len(blocks)

    # The limit is enforced on this worker type: what its 256 MiB cannot
    # hold is killed for memory...
    with pytest.raises(atoll.OutOfMemoryError, match="machine type XS allows 256 MiB"):
        hog(300)
    # ...and the argument, held once in the runner, comes back whole, on
    # one worker call after call.
    for _ in range(2):
        back = echo(payload)
        assert len(back) == len(payload) and back == payload
        del back


def test_large_values_inside_structures_and_yielded(server):
    parts = [os.urandom(3 * MB), bytearray(os.urandom(2 * MB)), b"small", os.urandom(MB)]

    @isolated(keep_alive=30)
    def digest(items, *, key):
        import hashlib

        return key, [hashlib.sha256(p).hexdigest() for p in items], items[1]

    key, digests, second = digest(parts, key="k")
    assert key == "k"
    assert digests == [hashlib.sha256(p).hexdigest() for p in parts]
    assert type(second) is bytearray and second == parts[1]

    @isolated(keep_alive=30)
    def chunks(n):
        import os

        for i in range(n):
            yield bytes([i]) * (4 * 1_000_000) + os.urandom(8)

    got = list(chunks(3))
    assert [len(c) for c in got] == [4 * MB + 8] * 3
    assert [c[0] for c in got] == [0, 1, 2]


def test_an_argument_that_fails_to_unpickle_leaves_the_worker_serving(server):
    class Refuses:
        def __reduce__(self):
            return (int, ("not a number",))

    @isolated(keep_alive=30)
    def first(bad, data):
        return len(data)

    # The failure is raised mid-stream, with megabytes of the frame still
    # unread: the worker reads past them and serves the next call.
    with pytest.raises(atoll.SerializationError, match="could not be unpickled in the worker"):
        first(Refuses(), os.urandom(8 * MB))
    assert first(1, b"abc") == 3


def test_parts_join_to_the_pickle_without_copying_large_data():
    big = os.urandom(2 * MB)
    parts, manifest = _pickling.dumps_parts(([big, b"x"], {}), protocol=5)
    assert manifest == {}
    assert any(p is big for p in parts), "the large bytes is kept by reference, not copied"
    assert b"".join(parts) == _pickling.dumps(([big, b"x"], {}), protocol=5)[0]


def test_large_values_are_read_from_the_received_message_in_place():
    from atoll._call import ValueEvent, read_event
    from atoll.v1 import atoll_pb2 as pb

    value = os.urandom(2 * MB)
    for event, kind in [(pb.RunEvent(result=pb.Result(value=value)), "result"), (pb.RunEvent(yielded=value), "yielded")]:
        got = read_event(event.SerializeToString())
        assert isinstance(got, ValueEvent) and got.WhichOneof("event") == kind
        assert bytes(got.result.value if kind == "result" else got.yielded) == value
    # Anything else is protobuf's to parse: small events, large ones of
    # other kinds, a value followed by another field.
    others = [
        pb.RunEvent(result=pb.Result(value=b"small")),
        pb.RunEvent(result=pb.Result(exception=pb.RemoteException(pickled=value, type_name="E"))),
        pb.RunEvent(output=pb.Output(data=value)),
    ]
    for event in others:
        assert read_event(event.SerializeToString()) == event
    trailing = pb.RunEvent(yielded=value).SerializeToString() + pb.RunEvent(output=pb.Output(data=b"x")).SerializeToString()
    assert read_event(trailing) == pb.RunEvent.FromString(trailing)


def test_a_large_bytes_argument_is_sent_from_its_own_memory():
    from atoll._call import Call, EnvironmentSpec
    from atoll._serialize import dumps_arguments
    from atoll.v1 import atoll_pb2 as pb

    big, mutable = os.urandom(2 * MB), bytearray(os.urandom(2 * MB))
    pieces = dumps_arguments("f", (big, mutable), {})
    # The bytes goes as it is; the bytearray is copied, so that a change
    # after the call was made (submit, map) is not what is sent.
    assert any(p is big for p in pieces)
    assert not any(p is mutable for p in pieces) and all(type(p) is bytes for p in pieces)
    assert b"".join(pieces) == _pickling.dumps(((big, mutable), {}), protocol=5)[0]
    call = Call("f", b"fn", pieces, EnvironmentSpec("3.11"), "XS", 3.0)
    wire = call.wire_request()
    assert any(p is big for p in wire)
    assert pb.RunRequest.FromString(b"".join(wire)) == call.request()
    # Small arguments are one piece.
    assert len(dumps_arguments("f", (b"small",), {})) == 1


def test_the_kept_request_head_follows_every_change_of_the_call():
    from atoll._call import Call, EnvironmentSpec, Retries
    from atoll.v1 import atoll_pb2 as pb

    fn = b"the function's pickle"
    base = Call("f", fn, (b"1",), EnvironmentSpec("3.11"), "XS", 3.0)
    calls = [
        base,
        Call("f", fn, (b"2",), EnvironmentSpec("3.11"), "XS", 3.0),  # only the arguments differ: the head is kept
        Call("f", bytes(bytearray(b"another pickle")), (b"2",), EnvironmentSpec("3.11"), "XS", 3.0),
        Call("f", fn, (b"2",), EnvironmentSpec("3.11", ("six",)), "XS", 3.0),
        Call("f", fn, (b"2",), EnvironmentSpec("3.11"), "M", 3.0),
        Call("f", fn, (b"2",), EnvironmentSpec("3.11"), "XS", 0.0),
        Call("f", fn, (b"2",), EnvironmentSpec("3.11"), "XS", 3.0, timeout=5.0),
        Call("f", fn, (b"2",), EnvironmentSpec("3.11"), "XS", 3.0, retries=Retries(2)),
        Call("f", fn, (b"2",), EnvironmentSpec("3.11"), "XS", 3.0, secrets=("token",)),
        Call("g", fn, (b"2",), EnvironmentSpec("3.11"), "XS", 3.0),
        base,
    ]
    for call in calls:
        assert pb.RunRequest.FromString(b"".join(call.wire_request())) == call.request(), call


def test_a_mutable_argument_is_sent_as_it_was_when_submitted(server):
    @isolated(keep_alive=30)
    def digest(data):
        import hashlib

        return hashlib.sha256(data).hexdigest()

    data = bytearray(os.urandom(4 * MB))
    want = hashlib.sha256(data).hexdigest()
    future = digest.submit(data)
    data[:] = bytes(len(data))  # changed at once, likely before it is sent
    assert future.result(timeout=120) == want


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="vmsplice(2) is Linux's")
def test_the_runner_splices_a_large_bytes_value_and_keeps_it_until_the_next_call(tmp_path, monkeypatch):
    from atoll import _runner

    value = os.urandom(3 * MB)
    # Into a pipe: the bytes go by reference and are kept until release.
    splicer = _runner._Splicer()
    monkeypatch.setattr(_runner, "_splicer", splicer)
    r, w = os.pipe()
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(_read_all(r)))
    reader.start()
    _runner._write_frame(w, b"R", b"head", value, b"tail")
    os.close(w)
    reader.join()
    os.close(r)
    length, kind = struct.unpack(">IB", bytes(got[:5]))
    assert kind == ord("R") and length == 1 + len(value) + 8 and bytes(got[5:]) == b"head" + value + b"tail"
    assert splicer.spliced == 1 and splicer.kept == [value]
    splicer.release()
    assert splicer.kept == []
    # Into a file, which vmsplice refuses: copied, and splicing is off.
    splicer = _runner._Splicer()
    monkeypatch.setattr(_runner, "_splicer", splicer)
    path = tmp_path / "frame"
    with open(path, "wb") as f:
        _runner._write_frame(f.fileno(), b"R", value)
    assert path.read_bytes()[5:] == value
    assert splicer.off and splicer.spliced == 0 and splicer.kept == []


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _vm_flags(address: int) -> list[str]:
    """The VmFlags of this process's mapping that holds address."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            if "-" in head and not head.endswith(":"):
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low <= address < high
            elif inside and line.startswith("VmFlags:"):
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def _data_address(value: bytes) -> int:
    import ctypes

    return ctypes.cast(ctypes.c_char_p(value), ctypes.c_void_p).value


@pytest.mark.skipif(
    not os.path.isdir("/sys/kernel/mm/transparent_hugepage"),
    reason="needs Linux with transparent huge pages (madvise(2) MADV_HUGEPAGE, /proc/self/smaps)",
)
def test_a_large_bytes_the_caller_unpickles_gets_huge_pages_and_a_small_one_does_not():
    import pickle
    import socket
    import types

    from atoll import _lean

    big, small = os.urandom(24 * MB), os.urandom(MB)

    def from_a_lean_frame(value: bytes) -> bytes:
        payload = pickle.dumps(value, protocol=5)
        theirs, ours = socket.socketpair()
        writer = threading.Thread(target=lambda: (theirs.sendall(payload), theirs.close()))
        writer.start()
        with ours:
            stream = _lean._FrameStream(types.SimpleNamespace(buf=bytearray(), sock=ours), len(payload))
            out = pickle.load(stream)
        writer.join()
        return out

    def from_a_shared_value(value: bytes) -> bytes:
        fd = os.memfd_create("value")
        _writes(fd, pickle.dumps(value, protocol=5))
        with io.BufferedReader(_lean._AdvisedFile(fd)) as f:
            return pickle.load(f)

    for receive in (from_a_lean_frame, from_a_shared_value):
        got = receive(big)
        assert got == big
        # The middle of the object: its whole 2 MiB pages were advised.
        assert "hg" in _vm_flags(_data_address(got) + len(got) // 2), receive.__name__
        got = receive(small)
        assert got == small and "hg" not in _vm_flags(_data_address(got) + len(got) // 2), receive.__name__


def _writes(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
