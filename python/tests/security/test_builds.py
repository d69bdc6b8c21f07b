"""Attack 2 of the trust boundary: a package build runs its own code on
the server. Here an account installs a source-only package whose build
backend (the setup.py of a real package) is the attack: it tries to read
and write the server's state.db, write into another account's environment,
plant files in the shared uv cache, act as root, leave a process behind,
and (in the second test) outlive a server killed with SIGKILL. Each must
fail, and the other account's next call must still import its own
untouched package.

The package is an sdist the test writes, installed by path with the
server's --allow-local-requirements; its in-tree build backend needs
nothing from the index. Only the pip every environment gets and the
victim's `six` come from the index, as in the other environment tests."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import tarfile
import threading
import uuid
import zipfile
from pathlib import Path

import pytest

from atoll import CloudKeyCredentials, isolated
from atoll._host import CloudHost
from conftest import Server, wait_until

BUILDS_UNSANDBOXED = "environment builds run as plain processes"

# The build backend of the attacking package: its build_wheel runs every
# attack, then writes a wheel whose module holds the report.
BACKEND = r'''
import ctypes, hashlib, base64, json, os, subprocess, sys, time, zipfile

CFG = json.loads(__CFG__)


def _try(fn):
    try:
        fn()
        return "allowed"
    except Exception as e:
        return "denied: %s: %s" % (type(e).__name__, e)


def _status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _writable_files(top, linked_only=False):
    """Files under top this process can open for writing."""
    hits = []
    for root, _, files in os.walk(top):
        for f in files:
            p = os.path.join(root, f)
            try:
                if linked_only and os.lstat(p).st_nlink < 2:
                    continue
                open(p, "ab").close()
                hits.append(p)
            except OSError:
                pass
    return hits


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _unshare_user():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER
        return "allowed"
    return "denied: errno %d" % ctypes.get_errno()


def _attack():
    st = _status()
    r = {
        "uid": os.getuid(), "euid": os.geteuid(),
        "cap_eff": st.get("CapEff"), "cap_prm": st.get("CapPrm"), "cap_bnd": st.get("CapBnd"),
        "no_new_privs": st.get("NoNewPrivs"), "seccomp": st.get("Seccomp"),
        "read_state": _try(lambda: open(CFG["state_db"], "rb").read(16)),
        "write_state": _try(lambda: open(CFG["state_db"], "ab").write(b"planted")),
        "data_dir_entries": _listdir(CFG["data_dir"]),
        "write_victim_module": _try(lambda: open(CFG["victim_module"], "a").write("\nPLANTED = True\n")),
        "plant_victim_pth": _try(lambda: open(os.path.join(CFG["victim_site"], "atoll_planted.pth"), "w").write("import os\n")),
        "plant_in_cache": _try(lambda: open(os.path.join(CFG["cache"], "planted-" + CFG["token"]), "w").write("x")),
        "cache_files_writable": _writable_files(CFG["cache"]),
        "envs_files_writable": _writable_files(CFG["envs"]),
        # Files of its own environment that are links to others (uv's
        # cache links): writing one would change every environment with it.
        "linked_files_writable": [p for d in os.listdir(CFG["tmp"]) if not d.endswith(".scratch")
                                  for p in _writable_files(os.path.join(CFG["tmp"], d), linked_only=True)],
        "setuid_root": _try(lambda: os.setuid(0)),
        "unshare_user": _unshare_user(),
    }
    # A daemon that would outlive the build, were the build not contained.
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", CFG["marker"]],
                     start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if CFG.get("hang"):
        # The build hangs here (its child carries the marker, so the test
        # sees it) until something kills it.
        subprocess.run([sys.executable, "-c", "import time; time.sleep(600)", CFG["marker"]])
    return r


def get_requires_for_build_wheel(config_settings=None):
    return []


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (name, digest, len(data))


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    report = _attack()
    dist, module = CFG["dist"], CFG["module"]
    info = "%s-1.0.dist-info" % dist
    files = {
        module + "/__init__.py": ("REPORT = %r\n" % json.dumps(report)).encode(),
        info + "/METADATA": ("Metadata-Version: 2.1\nName: %s\nVersion: 1.0\n" % CFG["name"]).encode(),
        info + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: atoll-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [_record_line(n, d) for n, d in files.items()] + [info + "/RECORD,,"]
    files[info + "/RECORD"] = ("\n".join(record) + "\n").encode()
    name = "%s-1.0-py3-none-any.whl" % dist
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
    return name
'''


def make_attack_sdist(directory: Path, cfg: dict) -> str:
    """Writes the attacking sdist; returns its requirement string."""
    dist = cfg["dist"]
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
                          f'\n[project]\nname = "{cfg["name"]}"\nversion = "1.0"\n',
        "backend.py": BACKEND.replace("__CFG__", repr(json.dumps(cfg))),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {cfg['name']}\nVersion: 1.0\n",
    }
    path = directory / f"{dist}-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{dist}-1.0/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return f"{cfg['name']} @ {path.as_uri()}"


def attack_config(data_dir: Path, victim_module: str, **more) -> dict:
    token = uuid.uuid4().hex[:12]
    name = f"atoll-attack-{token}"
    return {
        "name": name, "dist": name.replace("-", "_"), "module": f"atoll_attack_{token}", "token": token,
        "marker": f"atoll-build-orphan-{token}",
        "data_dir": str(data_dir), "state_db": str(data_dir / "state.db"),
        "envs": str(data_dir / "envs" / "envs"), "cache": str(data_dir / "envs" / "cache"),
        "tmp": str(data_dir / "envs" / "tmp"),
        "victim_module": victim_module, "victim_site": str(Path(victim_module).parent),
        **more,
    }


def marked_processes(marker: str) -> dict[int, int]:
    """pid -> ppid of the host's processes with marker in their command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                stat = (entry / "stat").read_text()
                found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def require_build_sandbox(server: Server) -> None:
    if BUILDS_UNSANDBOXED in server.log():
        line = next(ln for ln in server.log().splitlines() if BUILDS_UNSANDBOXED in ln)
        if os.environ.get("ATOLL_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"builds are not sandboxed on this host: {line}")
        pytest.skip(f"builds are not sandboxed on this host: {line}")


def six_fingerprint():
    import hashlib
    import importlib.util
    import os

    import six

    site = os.path.dirname(six.__file__)
    return {
        "module": six.__file__,
        "sha256": hashlib.sha256(open(six.__file__, "rb").read()).hexdigest(),
        "planted": hasattr(six, "PLANTED") or importlib.util.find_spec("atoll_planted") is not None
        or os.path.exists(os.path.join(site, "atoll_planted.pth")),
    }


def report_of(module: str):
    def read():
        import importlib
        import json

        return json.loads(importlib.import_module(module).REPORT)

    return read


class Accounts:
    def __init__(self, server: Server):
        host = CloudHost(server.address)
        self.victim = dict(host=host, credentials=CloudKeyCredentials(*server.create_key("victim")), keep_alive=0)
        self.attacker = dict(host=host, credentials=CloudKeyCredentials(*server.create_key("attacker")), keep_alive=0)


@pytest.fixture
def build_server(tmp_path: Path):
    srv = Server(tmp_path / "data", extra_args=["--allow-local-requirements"])
    accounts = Accounts(srv)
    srv.start()
    require_build_sandbox(srv)
    yield srv, accounts
    srv.stop()
    assert "panic" not in srv.log(), srv.log()


def denied(outcome: str) -> bool:
    return outcome.startswith("denied")


def test_source_build_cannot_reach_the_server_other_environments_or_the_cache(build_server, tmp_path: Path):
    server, accounts = build_server
    victim_six = isolated(requirements=["six"], **accounts.victim)(six_fingerprint)
    before = victim_six()
    assert not before["planted"]
    state_before = (server.data_dir / "state.db").stat()

    cfg = attack_config(server.data_dir, before["module"])
    requirement = make_attack_sdist(tmp_path, cfg)
    report = isolated(requirements=[requirement], **accounts.attacker)(report_of(cfg["module"]))()

    # Not root, no capabilities, no way to gain any.
    assert report["uid"] != 0 and report["euid"] != 0, report
    for caps in ("cap_eff", "cap_prm", "cap_bnd"):
        assert int(report[caps], 16) == 0, report
    assert report["no_new_privs"] == "1", report
    assert report["seccomp"] == "2", report
    assert denied(report["setuid_root"]), report
    assert denied(report["unshare_user"]), report
    # The server's state is out of sight.
    for attack in ("read_state", "write_state"):
        assert denied(report[attack]), (attack, report[attack])
    # At most the empty directories leading to its own environment's mount.
    assert set(report["data_dir_entries"]) <= {"envs"}, report["data_dir_entries"]
    # Other environments, and the cache that feeds them, are out of reach.
    for attack in ("write_victim_module", "plant_victim_pth", "plant_in_cache"):
        assert denied(report[attack]), (attack, report[attack])
    assert report["cache_files_writable"] == [], report
    assert report["envs_files_writable"] == [], report
    assert report["linked_files_writable"] == [], report
    # The daemon it started died with its build.
    assert wait_until(lambda: not marked_processes(cfg["marker"]), timeout=15), marked_processes(cfg["marker"])

    # Seen from the host: nothing was planted.
    assert not list((server.data_dir / "envs" / "cache").rglob(f"planted-{cfg['token']}"))
    assert not (Path(before["module"]).parent / "atoll_planted.pth").exists()
    assert (server.data_dir / "state.db").stat().st_ino == state_before.st_ino

    # The victim's next call imports its own, untouched six; a new
    # environment with six (from the same cache) is untouched too.
    after = victim_six()
    assert after == before, (before, after)
    fresh = isolated(requirements=["six", "pip"], **accounts.victim)(six_fingerprint)()
    assert fresh["sha256"] == before["sha256"] and not fresh["planted"], fresh
    assert server.alive()


def test_killing_the_server_kills_its_builds(build_server, tmp_path: Path):
    server, accounts = build_server
    victim_six = isolated(requirements=["six"], **accounts.victim)(six_fingerprint)
    before = victim_six()
    cfg = attack_config(server.data_dir, before["module"], hang=True)
    requirement = make_attack_sdist(tmp_path, cfg)

    outcome = {}

    def attack():
        try:
            outcome["result"] = isolated(requirements=[requirement], **accounts.attacker)(report_of(cfg["module"]))()
        except Exception as e:  # the server dies under it
            outcome["error"] = e

    caller = threading.Thread(target=attack, daemon=True)
    caller.start()
    assert wait_until(lambda: len(marked_processes(cfg["marker"])) >= 2, timeout=180), server.log()[-3000:]
    hung = marked_processes(cfg["marker"])
    # Their parents: the build backend, and the container's init.
    backends = set(hung.values()) - set(hung)

    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    assert wait_until(lambda: not marked_processes(cfg["marker"]), timeout=15), marked_processes(cfg["marker"])
    assert wait_until(lambda: not any(alive(p) for p in backends), timeout=15), backends
    caller.join(timeout=60)
    assert "error" in outcome, outcome

    # A new server on the same data directory removes what the dead one
    # left and serves the victim as before.
    server.stop()
    restarted = Server(server.data_dir, extra_args=["--allow-local-requirements"])
    restarted.start()
    try:
        victim = dict(accounts.victim, host=CloudHost(restarted.address))
        assert isolated(requirements=["six"], **victim)(six_fingerprint)() == before
        runtime_root = server.data_dir / "build-sandbox" / "runtime"
        listed = subprocess.run(["runc", "--root", str(runtime_root), "list", "-q"], capture_output=True, text=True)
        assert not re.search(r"\S", listed.stdout), listed.stdout
        assert not list((server.data_dir / "envs" / "tmp").iterdir())
    finally:
        restarted.stop()


def make_pth_wheel(directory: Path, cfg: dict) -> str:
    """A wheel whose .pth file (which Python runs at every start of an
    interpreter with the environment's site-packages) plants a file in the
    shared cache; returns its requirement string."""
    dist, info = cfg["dist"], f"{cfg['dist']}-1.0.dist-info"
    planted = os.path.join(cfg["cache"], "planted-" + cfg["token"])
    files = {
        f"{dist}.pth": f"import os; open({planted!r}, 'w').close()\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {cfg['name']}\nVersion: 1.0\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: atoll-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    path = directory / f"{dist}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return f"{cfg['name']} @ {path.as_uri()}"


def test_a_wheels_pth_file_does_not_run_while_the_cache_is_writable(build_server, tmp_path: Path):
    """Wheels install without running their code, but a .pth file runs at
    the start of any Python that reads the environment's site-packages:
    the build must start none while the shared cache is writable."""
    server, accounts = build_server
    cfg = attack_config(server.data_dir, "/nonexistent/six.py")
    requirement = make_pth_wheel(tmp_path, cfg)
    cache = cfg["cache"]

    def sees_the_cache():
        import os

        return os.path.exists(cache)

    assert isolated(requirements=[requirement, "six"], **accounts.attacker)(sees_the_cache)() is False
    assert not list((server.data_dir / "envs" / "cache").rglob(f"planted-{cfg['token']}"))
    assert isolated(requirements=["six"], **accounts.victim)(six_fingerprint)()["planted"] is False
