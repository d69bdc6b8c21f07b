"""sync_dir and the persistent /data volume, end to end against real
servers."""

from __future__ import annotations

import os
import pickle
import stat
import textwrap
from pathlib import Path

import grpc
import pytest
from conftest import Server, require_sandbox, wait_until

from atoll import CloudKeyCredentials, QuotaExceededError
from atoll._host import CloudHost
from atoll._sync import SyncResult, sync_dir
from atoll.v1 import storage_pb2 as pb
from atoll.v1 import storage_pb2_grpc as pb_grpc


ACCOUNT = "sync-tests"


def create_key(server: Server, account: str) -> CloudKeyCredentials:
    return CloudKeyCredentials(*server.create_key(account))


@pytest.fixture(scope="module")
def creds(server) -> CloudKeyCredentials:
    return create_key(server, ACCOUNT)


def stored(server: Server, remote: str, account: str = ACCOUNT) -> Path:
    """Where the server keeps a /data path of an account."""
    assert remote.startswith("/data")
    return server.data_dir / "data" / account / remote[len("/data") :].lstrip("/")


def make_tree(root: Path) -> dict[str, bytes]:
    """A tree with nested and empty directories, unicode names, modes and
    an internal symlink; returns the files' contents by relative path."""
    files = {
        "README.md": b"# data\n",
        "run.sh": b"#!/bin/sh\necho hi\n",
        "nested/deeper/weights.bin": os.urandom(300_000),
        "nested/empty.txt": b"",
        "données/模型 ✓.txt": "unicode ✓".encode(),
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "run.sh").chmod(0o755)
    (root / "nested" / "empty.txt").chmod(0o600)
    (root / "empty-dir").mkdir()
    (root / "nested" / "latest").symlink_to("deeper/weights.bin")
    (root / "abs-link").symlink_to(root / "README.md")  # absolute, but inside the tree
    return files


def test_sync_dir_uploads_a_tree(server, creds, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    files = make_tree(src)

    remote = sync_dir(src, "/data/tree", credentials=creds)

    assert remote == "/data/tree"
    assert isinstance(remote, str) and isinstance(remote, SyncResult)
    # Captured by an isolated function, it travels as a plain str.
    assert type(pickle.loads(pickle.dumps(remote))) is str
    assert remote.files_sent == len(files)
    assert remote.bytes_sent == sum(len(d) for d in files.values())
    dst = stored(server, "/data/tree")
    for rel, data in files.items():
        assert (dst / rel).read_bytes() == data, rel
    assert stat.S_IMODE((dst / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dst / "nested" / "empty.txt").stat().st_mode) == 0o600
    assert (dst / "empty-dir").is_dir() and not any((dst / "empty-dir").iterdir())
    assert os.readlink(dst / "nested" / "latest") == "deeper/weights.bin"
    assert os.readlink(dst / "abs-link") == "README.md"
    assert (dst / "abs-link").read_bytes() == files["README.md"]


def test_second_sync_sends_only_changes(server, creds, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    files = make_tree(src)
    first = sync_dir(str(src), "/data/incremental/", credentials=creds)
    assert first == "/data/incremental"
    assert first.bytes_sent > 0

    again = sync_dir(str(src), "/data/incremental", credentials=creds)
    assert (again.bytes_sent, again.files_sent, again.files_unchanged) == (0, 0, len(files))

    (src / "README.md").write_bytes(b"# DATA\n")  # same size, new content
    (src / "nested" / "new.txt").write_bytes(b"new file")
    (src / "run.sh").chmod(0o700)  # mode only
    changed = sync_dir(str(src), "/data/incremental", credentials=creds)
    assert (changed.files_sent, changed.bytes_sent) == (2, len(b"# DATA\n") + len(b"new file"))
    dst = stored(server, "/data/incremental")
    assert (dst / "README.md").read_bytes() == b"# DATA\n"
    assert (dst / "nested" / "new.txt").read_bytes() == b"new file"
    assert stat.S_IMODE((dst / "run.sh").stat().st_mode) == 0o700


def test_sync_keeps_remote_files_it_does_not_have(server, creds, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    sync_dir(src, "/data/keep", credentials=creds)
    (src / "a").unlink()
    (src / "b").write_text("b")
    sync_dir(src, "/data/keep", credentials=creds)
    assert sorted(p.name for p in stored(server, "/data/keep").iterdir()) == ["a", "b"]


@pytest.mark.parametrize(
    "remote",
    ["data/x", "relative", "/tmp/x", "/database", "/data/../etc", "/data/a/../../etc", "/", "", "//data/x"],
)
def test_remote_dir_must_be_under_data(remote, tmp_path):
    # An unreachable host: the check happens before anything is sent.
    with pytest.raises(ValueError, match="remote_dir"):
        sync_dir(tmp_path, remote, host=CloudHost("127.0.0.1:9"))


def test_local_path_must_be_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sync_dir(tmp_path / "missing", "/data/x", host=CloudHost("127.0.0.1:9"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        sync_dir(tmp_path / "file", "/data/x", host=CloudHost("127.0.0.1:9"))


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside", "sub/../../outside"])
def test_symlink_out_of_the_tree_is_refused(server, creds, tmp_path, target):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (tmp_path / "outside").write_text("secret")
    (src / "ok.txt").write_text("ok")
    (src / "link").symlink_to(target)
    with pytest.raises(ValueError, match="symlink 'link'.*outside"):
        sync_dir(src, "/data/links", credentials=creds)
    assert not stored(server, "/data/links").exists()


def test_server_refuses_traversal_from_any_client(server, creds):
    """The server checks paths itself: a client that skips the SDK's checks
    gets INVALID_ARGUMENT and nothing is written."""
    stub = pb_grpc.StorageStub(grpc.insecure_channel(server.address))
    cases = [
        ("/data/../../etc", [pb.SyncEntry(path="x", kind=pb.ENTRY_KIND_FILE, size=1)]),
        ("/etc", [pb.SyncEntry(path="x", kind=pb.ENTRY_KIND_FILE, size=1)]),
        ("/data/t", [pb.SyncEntry(path="../../../escape", kind=pb.ENTRY_KIND_FILE, size=1)]),
        ("/data/t", [pb.SyncEntry(path="/abs", kind=pb.ENTRY_KIND_FILE, size=1)]),
        ("/data/t", [pb.SyncEntry(path="l", kind=pb.ENTRY_KIND_SYMLINK, link_target="../../../etc/passwd")]),
        ("/data/t", [pb.SyncEntry(path="l", kind=pb.ENTRY_KIND_SYMLINK, link_target="/etc/passwd")]),
    ]
    for remote, entries in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.PlanSync(pb.PlanSyncRequest(remote_dir=remote, entries=entries), metadata=creds.metadata())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (remote, entries)
    assert not stored(server, "/data/t").exists()
    assert not (server.data_dir / "escape").exists()


def test_interrupted_upload_leaves_no_partial_file(server, creds, tmp_path, monkeypatch):
    from atoll import _sync

    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(b"old" * 1000)
    sync_dir(src, "/data/interrupted", credentials=creds)

    (src / "model.bin").write_bytes(os.urandom(1_000_000))
    (src / "other.bin").write_bytes(os.urandom(1_000_000))
    monkeypatch.setattr(_sync, "CHUNK_BYTES", 64 * 1024)
    real_file = _sync._Sender._file

    def breaks_midway(self, entry):
        for n, request in enumerate(real_file(self, entry)):
            if n == 5:
                raise ConnectionResetError("the network went away")
            yield request

    monkeypatch.setattr(_sync._Sender, "_file", breaks_midway)
    with pytest.raises(ConnectionResetError, match="network went away"):
        sync_dir(src, "/data/interrupted", credentials=creds)

    dst = stored(server, "/data/interrupted")
    assert (dst / "model.bin").read_bytes() == b"old" * 1000
    assert not (dst / "other.bin").exists()
    staging = stored(server, "/data/.atoll-staging")
    assert wait_until(lambda: not staging.exists()), list(staging.rglob("*"))

    monkeypatch.setattr(_sync._Sender, "_file", real_file)
    result = sync_dir(src, "/data/interrupted", credentials=creds)
    assert result.files_sent == 2
    assert (dst / "model.bin").read_bytes() == (src / "model.bin").read_bytes()


def test_quota_exceeded(tmp_path):
    srv = Server(tmp_path / "quota-server", ["--data-quota", "1000"]).start()
    try:
        host, creds = CloudHost(srv.address), create_key(srv, ACCOUNT)
        src = tmp_path / "src"
        src.mkdir()
        (src / "first").write_bytes(b"1" * 600)
        sync_dir(src, "/data/a", host=host, credentials=creds)

        big = tmp_path / "big"
        big.mkdir()
        (big / "second").write_bytes(b"2" * 600)
        with pytest.raises(QuotaExceededError, match="quota"):
            sync_dir(big, "/data/b", host=host, credentials=creds)
        assert (stored(srv, "/data/a") / "first").read_bytes() == b"1" * 600
        assert not (stored(srv, "/data/b") / "second").exists()
    finally:
        srv.stop()


def test_data_survives_a_server_restart(tmp_path):
    data_dir = tmp_path / "restart-server"
    src = tmp_path / "src"
    src.mkdir()
    (src / "kept.bin").write_bytes(os.urandom(200_000))
    first = Server(data_dir).start()
    try:
        creds = create_key(first, ACCOUNT)
        assert sync_dir(src, "/data/kept", host=CloudHost(first.address), credentials=creds).bytes_sent == 200_000
    finally:
        first.stop()
    second = Server(data_dir).start()
    try:
        again = sync_dir(src, "/data/kept", host=CloudHost(second.address), credentials=creds)
        assert (again.bytes_sent, again.files_unchanged) == (0, 1)
        assert (stored(second, "/data/kept") / "kept.bin").read_bytes() == (src / "kept.bin").read_bytes()
    finally:
        second.stop()


def test_accounts_do_not_share_data(server, tmp_path):
    alice, bob = create_key(server, "alice"), create_key(server, "bob")
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret.txt").write_text("alice's secret")
    assert sync_dir(src, "/data/private", credentials=alice).files_sent == 1

    # Bob syncs the same tree to the same path: the server holds nothing
    # of his there, so everything travels, into his own directory.
    assert sync_dir(src, "/data/private", credentials=bob).files_sent == 1
    (src / "secret.txt").write_text("bob's own file")
    sync_dir(src, "/data/private", credentials=bob)
    assert (stored(server, "/data/private", "alice") / "secret.txt").read_text() == "alice's secret"
    assert (stored(server, "/data/private", "bob") / "secret.txt").read_text() == "bob's own file"


def test_reference_example_lists_synced_dir(server, run_script, tmp_path):
    # /data is a mount inside the sandbox; plain-process workers have no /data.
    require_sandbox(server)
    local = tmp_path / "path" / "to" / "local" / "dir"
    local.mkdir(parents=True)
    (local / "hello.txt").write_text("hello")
    (local / "weights.bin").write_bytes(b"\0" * 10)
    script = textwrap.dedent(
        """
        from atoll import sync_dir, isolated

        # Upload a local directory to the persistent /data directory
        remote_dir = sync_dir("path/to/local/dir", "/data/remote_dir")

        # An isolated function to list the contents of the uploaded directory
        @isolated()
        def test():
            import os
            os.system(f"ls {remote_dir}")

        # Execute the test function
        test() # prints contents of the uploaded directory
        """
    )
    proc = run_script(script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["hello.txt", "weights.bin"]


def test_functions_share_data_across_calls_and_workers(server, creds, tmp_path):
    from atoll import isolated

    require_sandbox(server)

    src = tmp_path / "src"
    src.mkdir()
    (src / "input.txt").write_text("synced")
    remote = sync_dir(src, "/data/shared", credentials=creds)

    @isolated(keep_alive=0, credentials=creds)
    def write(path):
        with open(f"{path}/from-worker.txt", "w") as f:
            f.write("written by a worker")
        with open(f"{path}/input.txt") as f:
            return f.read()

    @isolated(keep_alive=0, credentials=creds)
    def read(path):
        import os

        with open(f"{path}/from-worker.txt") as f:
            return f.read(), os.getpid()

    assert write(remote) == "synced"
    assert read(remote)[0] == "written by a worker"  # a new worker (keep_alive=0)
    assert (stored(server, "/data/shared") / "from-worker.txt").read_text() == "written by a worker"
