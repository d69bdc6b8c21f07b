"""Attack 1 of the trust boundary: user code inside a worker writes a
forged worker event to the agent's protocol stream (the agent runs as the
runner's uid, so /proc/<agent>/fd/1 opens), claiming a 2^62-byte value.
The call fails with a protocol violation, the server lives on, its log
names the worker and the account, and every account's next call works,
one running alongside the attack included. Should the stream be out of
the user's reach, the attack is still made, and must do no harm."""

from __future__ import annotations

import re
import threading

import atoll
from atoll import CloudKeyCredentials, isolated
from conftest import Server, wait_until


def forge_value_event():
    """In the worker: write a forged WorkerEvent{value{size: 2^62}} frame
    to every stream of the agent it can open; report what it reached."""
    import os

    def varint(n):
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    value = b"\x08" + varint(1 << 62)  # WorkerValue.size = 2^62
    event = b"\x2a" + varint(len(value)) + value  # WorkerEvent.value (field 5)
    frame = varint(len(event)) + event
    reached, refused = [], []
    for pid in dict.fromkeys([1, os.getppid()]):  # the agent: PID 1 in a sandbox, the parent otherwise
        path = f"/proc/{pid}/fd/1"
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError as e:
            refused.append(f"{path}: {e}")
            continue
        try:
            os.write(fd, frame)
            reached.append(path)
        except OSError as e:
            refused.append(f"{path}: {e}")
        finally:
            os.close(fd)
        break
    return reached, refused


def slow_hello(seconds):
    import time

    time.sleep(seconds)
    return "still served"


def test_forged_frame_kills_only_its_own_call(server: Server):
    mallory = CloudKeyCredentials(*server.create_key("mallory"))
    bystander = CloudKeyCredentials(*server.create_key("bystander"))
    beside = {}
    running = threading.Thread(
        target=lambda: beside.update(result=isolated(credentials=bystander, keep_alive=0)(slow_hello)(4))
    )
    running.start()

    attack = isolated(credentials=mallory, keep_alive=0)(forge_value_event)
    try:
        reached, refused = attack()
    except atoll.WorkerCrashedError as e:
        # The frame reached the server: it is a protocol violation of
        # mallory's worker alone.
        assert "protocol violation" in str(e), e
        assert "exceeds" in str(e), e
        assert wait_until(lambda: re.search(r"broke the protocol.*account=mallory", server.log()), timeout=10)
        line = next(ln for ln in server.log().splitlines() if "broke the protocol" in ln and "account=mallory" in ln)
        assert re.search(r"worker=\S+", line), line
    else:
        # The stream was out of reach: nothing was written, nothing harmed.
        assert not reached, f"the forged frame was written to {reached} and the call still succeeded"
        assert refused, "the attack tried nothing"

    running.join(timeout=60)
    assert beside.get("result") == "still served", beside
    assert server.alive()
    assert "panic" not in server.log()
    for creds in (mallory, bystander, None):  # None: the session's default account
        assert isolated(credentials=creds)(lambda: "alive")() == "alive"
