"""Progress on the caller's terminal: an environment build draws a line of
packages resolved/downloaded/installed, sync_dir a bar of bytes and files,
both only when stderr is a terminal (a pty here) and never otherwise."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest
from conftest import Server

CLEAR_LINE = "\r\x1b[K"


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory):
    """A server of its own, so that the environment the test asks for is
    built by it rather than found in the shared server's cache."""
    srv = Server(tmp_path_factory.mktemp("progress") / "data")
    key = srv.create_key()
    srv.start()
    yield srv, key
    srv.stop()


def run_on_pty(source: str, srv: Server, key: tuple[str, str], tmp_path: Path, terminal: bool) -> tuple[str, str]:
    """Runs source with stderr on a new pty (terminal) or a pipe; returns
    (stdout, stderr)."""
    script = tmp_path / "script.py"
    script.write_text(source)
    env = {**os.environ, "ATOLL_HOST": srv.address, "ATOLL_KEY_ID": key[0], "ATOLL_KEY_SECRET": key[1]}
    if not terminal:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    err = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 300)
            if not ready:
                raise AssertionError(f"no output for 300 s; so far: {err!r}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the pty
                break
            if not chunk:
                break
            err += chunk
        out = proc.stdout.read().decode()
        assert proc.wait(timeout=60) == 0, err.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, err.decode(errors="replace")


BUILD = textwrap.dedent(
    """
    from atoll import isolated

    @isolated(requirements=[{req!r}], keep_alive=0)
    def version():
        import six
        return six.__version__

    print(version())
    """
)


def test_build_progress_line_on_a_terminal(fresh_server, tmp_path):
    srv, key = fresh_server
    out, err = run_on_pty(BUILD.format(req="six==1.17.0"), srv, key, tmp_path, terminal=True)
    assert out.strip() == "1.17.0"
    # uv's own lines still pass, prefixed, and the progress line is drawn
    # in place with the counts the server summed from them.
    # (the requirement and pip, which every environment gets)
    assert re.search(r"atoll: Resolved \d+ packages?", err), err
    assert re.search(re.escape(CLEAR_LINE) + r"atoll: building environment: \d+ resolved", err), err
    final = re.findall(r"building environment: (\d+) resolved, (\d+) downloaded, (\d+) installed", err)
    assert final, err
    resolved, _, installed = map(int, final[-1])
    assert resolved >= 1 and installed >= 1, final


def test_no_build_progress_line_off_a_terminal(fresh_server, tmp_path):
    srv, key = fresh_server
    out, err = run_on_pty(BUILD.format(req="six==1.16.0"), srv, key, tmp_path, terminal=False)
    assert out.strip() == "1.16.0"
    assert re.search(r"atoll: Resolved \d+ packages?", err), err  # the plain lines, as before
    assert "building environment:" not in err and "\x1b[" not in err, err


SYNC = textwrap.dedent(
    """
    import os
    from atoll import sync_dir

    root = {root!r}
    os.makedirs(root, exist_ok=True)
    for i in range(12):
        with open(os.path.join(root, f"part-{{i}}.bin"), "wb") as f:
            f.write(os.urandom(300_000))
    result = sync_dir(root, {remote!r})
    print(result.files_sent, result.bytes_sent)
    """
)


def test_sync_dir_progress_bar_on_a_terminal(fresh_server, tmp_path):
    srv, key = fresh_server
    source = SYNC.format(root=str(tmp_path / "tree"), remote="/data/progress-tty")
    out, err = run_on_pty(source, srv, key, tmp_path, terminal=True)
    assert out.split() == ["12", str(12 * 300_000)]
    assert CLEAR_LINE + "atoll: sync_dir /data/progress-tty [" in err, err
    bars = re.findall(r"\[([#-]{24})\]\s+(\d+)% ([\d.]+ \w+) / ([\d.]+ \w+), (\d+)/(\d+) files", err)
    assert bars, err
    assert bars[0][1] == "0" and bars[0][4] == "0", bars[0]  # drawn before anything travelled
    last = bars[-1]
    assert last[0] == "#" * 24 and last[1] == "100" and last[3] == "3.4 MiB" and last[4:] == ("12", "12"), last
    assert err.endswith("\n"), repr(err[-80:])  # the bar is left in place, ended


def test_sync_dir_quiet_off_a_terminal(fresh_server, tmp_path):
    srv, key = fresh_server
    source = SYNC.format(root=str(tmp_path / "tree"), remote="/data/progress-pipe")
    out, err = run_on_pty(source, srv, key, tmp_path, terminal=False)
    assert out.split() == ["12", str(12 * 300_000)]
    assert err == "", err
