"""Attack 6 of the trust boundary: a function writes forged log records
and a flood to the agent's standard error (/proc/1/fd/2 in a sandbox, its
parent's otherwise), which the server reads. The server's log carries none
of the forged bytes and grows by a bounded amount; the server keeps
serving."""

from __future__ import annotations

import re
import uuid

import atoll
from atoll import CloudKeyCredentials, isolated
from conftest import Server


def inject(marker: str, flood_mib: int):
    """In the worker: write forged records, then flood_mib MiB, to every
    standard error of the agent it can open; report what it reached."""
    import os

    forged = (
        f"time=2026-01-01T00:00:00.000Z level=ERROR component=auth msg=\"{marker} key revoked\" account=root\n"
        f'{{"time":"2026-01-01T00:00:00Z","level":"ERROR","msg":"{marker}","component":"auth"}}\n'
    ).encode()
    chunk = (marker.encode() + b" ") * (1 << 16 // (len(marker) + 1)) + b"\n"
    reached, refused = [], []
    for pid in dict.fromkeys([1, os.getppid()]):
        path = f"/proc/{pid}/fd/2"
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError as e:
            refused.append(f"{path}: {e}")
            continue
        try:
            os.write(fd, forged)
            written = 0
            while written < flood_mib << 20:
                written += os.write(fd, chunk)
            reached.append(path)
        except OSError as e:
            refused.append(f"{path}: {e}")
        finally:
            os.close(fd)
        break
    return reached, refused


def test_forged_and_flooded_agent_stderr_never_reaches_the_log_raw(server: Server):
    mallory = CloudKeyCredentials(*server.create_key("mallory-logs"))
    marker = f"forged-{uuid.uuid4().hex}"
    before = server.log_path.stat().st_size

    reached, refused = isolated(credentials=mallory, keep_alive=0)(inject)(marker, 20)
    assert reached or refused, "the attack tried nothing"
    # The worker has ended (keep_alive=0) once another call is served: its
    # stderr is drained by then.
    for creds in (mallory, None):
        assert isolated(credentials=creds, keep_alive=0)(lambda: "alive")() == "alive"

    log = server.log()
    grown = server.log_path.stat().st_size - before
    assert marker not in log, [line for line in log.splitlines() if marker in line][:3]
    assert grown < 256 << 10, f"the server's log grew by {grown} bytes"
    assert server.alive()


def test_flood_that_reaches_the_agent_stays_out_of_the_log(tmp_path):
    """Where the runner can open its agent's stderr (the process sandbox,
    whose runner is the server's own user: root in CI), the bytes reach the
    server's reader, which logs none of them raw."""
    import os

    server = Server(tmp_path / "data", ["--sandbox", "process"])
    creds = CloudKeyCredentials(*server.create_key("mallory"))
    server.start()
    try:
        host = atoll._host.CloudHost(server.address)
        marker = f"forged-{uuid.uuid4().hex}"
        before = server.log_path.stat().st_size
        reached, refused = isolated(host=host, credentials=creds, keep_alive=0)(inject)(marker, 20)
        if os.geteuid() == 0:
            assert reached, refused  # root's runner may open anything of its user
        assert isolated(host=host, credentials=creds, keep_alive=0)(lambda: "alive")() == "alive"
        log = server.log()
        grown = server.log_path.stat().st_size - before
        assert f"{marker} key revoked" not in log  # the forged text line
        # The forged JSON record reads as one of the agent's own: logged as
        # such, a warning at most, tagged with its worker and account, its
        # fields inside the agent's group.
        for line in (ln for ln in log.splitlines() if marker in ln):
            assert re.match(r'time=\S+ level=WARN msg="worker agent" component=sandbox worker=w-\S+ account=mallory '
                            rf"agent_msg={marker} agent\.component=auth$", line), line
        assert grown < 256 << 10, f"the server's log grew by {grown} bytes"
        if reached:
            assert "not an agent record" in log, log[-2000:]
        assert server.alive()
    finally:
        server.stop()
