"""The /data quota is a hard limit: each account's /data is a filesystem of
its own (an ext4 image mounted through a loop device), so a function that
writes past the quota gets ENOSPC as an OSError, and the host's file system
does not fill."""

from __future__ import annotations

import errno

import pytest

import atoll
from atoll import QuotaExceededError, isolated, sync_dir
from conftest import Server

QUOTA = 4 << 20


def fill_data(mib: int) -> dict:
    """Writes up to mib MiB into /data; returns how far it got and the error."""
    import os

    written = 0
    chunk = b"x" * (1 << 20)
    try:
        with open("/data/fill.bin", "wb") as f:
            for _ in range(mib):
                f.write(chunk)
                f.flush()
                written += len(chunk)
            os.fsync(f.fileno())
    except OSError as e:
        return {"written": written, "errno": e.errno, "error": repr(e)}
    return {"written": written, "errno": None, "error": None}


def write_small(name: str) -> int:
    with open(f"/data/{name}", "wb") as f:
        return f.write(b"y" * (1 << 20))


def test_worker_writing_past_its_quota_gets_oserror(tmp_path):
    data_dir = tmp_path / "data"
    srv = Server(data_dir, ["--data-quota", str(QUOTA), "--data-volumes", "loop"])
    a = atoll.CloudKeyCredentials(*srv.create_key("quota-a"))
    b = atoll.CloudKeyCredentials(*srv.create_key("quota-b"))
    srv.start()
    try:
        host = atoll._host.CloudHost(srv.address)
        got = isolated(host=host, credentials=a, keep_alive=0)(fill_data)(50)
        assert got["errno"] in (errno.ENOSPC, errno.EDQUOT), got
        assert QUOTA <= got["written"] < 2 * QUOTA, got
        # The writes landed in the account's image, not on the host's disk.
        image = data_dir / "volumes" / "quota-a.ext4"
        assert image.stat().st_blocks * 512 <= image.stat().st_size < 2 * QUOTA
        # Another account has a volume of its own.
        assert isolated(host=host, credentials=b, keep_alive=0)(write_small)("b.bin") == 1 << 20
        # sync_dir counts what the function wrote against the same quota.
        src = tmp_path / "src"
        src.mkdir()
        (src / "more.bin").write_bytes(b"z" * (1 << 20))
        with pytest.raises(QuotaExceededError):
            sync_dir(src, "/data/more", host=host, credentials=a)
        assert srv.alive()
    finally:
        srv.stop()
    assert "panic" not in srv.log(), srv.log()

    # The volume and its limit survive a restart.
    srv = Server(data_dir, ["--data-quota", str(QUOTA), "--data-volumes", "loop"])
    srv.start()
    try:
        host = atoll._host.CloudHost(srv.address)

        def size_then_fill():
            import os

            return os.path.getsize("/data/fill.bin"), fill_data(50)

        size, got = isolated(host=host, credentials=a, keep_alive=0)(size_then_fill)()
        assert size >= QUOTA
        assert got["errno"] in (errno.ENOSPC, errno.EDQUOT), got
    finally:
        srv.stop()
    assert "panic" not in srv.log(), srv.log()
