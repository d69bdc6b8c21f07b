"""Sandboxed workers: machine-type limits, isolation, capacity and GPUs,
against a real atoll server running workers with runc."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import atoll
from atoll import isolated
from conftest import Server, atoll_binary, require_sandbox


@pytest.fixture
def sandboxed(server):
    require_sandbox(server)
    return server


def test_memory_limit_raises_out_of_memory(sandboxed):
    @isolated(machine_type="XS", keep_alive=0)
    def hog():
        blocks = []
        for _ in range(30):
            blocks.append(bytearray(10 * 1024 * 1024))
            for i in range(0, len(blocks[-1]), 4096):
                blocks[-1][i] = 1
        return len(blocks)

    with pytest.raises(atoll.OutOfMemoryError, match=r"machine type XS allows 256 MiB; use a larger machine_type") as info:
        hog()
    assert info.value.machine_type == "XS"
    assert isolated(machine_type="XS")(lambda: "alive")() == "alive"


def test_xs_gets_a_quarter_cpu(sandboxed):
    @isolated(machine_type="XS", keep_alive=0)
    def burn():
        import time

        wall, cpu = time.monotonic(), time.process_time()
        while time.monotonic() - wall < 3:
            pass
        return (time.process_time() - cpu) / (time.monotonic() - wall)

    share = burn()
    assert 0.15 < share < 0.4, share


def cpu_quota():
    """The CPU quota in cores that holds this process: the smallest of its
    own cpu cgroup's and its ancestors' up to the container's (cgroup v2 or
    v1). The runtime mounts the container's cgroup at /sys/fs/cgroup (v2)
    or /sys/fs/cgroup/cpu (v1), and /proc/self/cgroup names the process's
    cgroup by its host path, whose mount root is the container's."""
    import os

    def v2_quota(d):
        quota, period = open(f"{d}/cpu.max").read().split()
        return None if quota == "max" else int(quota) / int(period)

    def v1_quota(d):
        quota = int(open(f"{d}/cpu.cfs_quota_us").read())
        return None if quota < 0 else quota / int(open(f"{d}/cpu.cfs_period_us").read())

    own = [line.split(":", 2) for line in open("/proc/self/cgroup").read().splitlines()]
    for line in open("/proc/self/mountinfo").read().splitlines():
        fields, (fstype, _source, options) = line.split(" - ")[0].split(), line.split(" - ")[1].split()[:3]
        root, mountpoint = fields[3], fields[4]
        if fstype == "cgroup2" and mountpoint == "/sys/fs/cgroup":
            path, read = next(p for _, c, p in own if c == ""), v2_quota
        elif fstype == "cgroup" and "cpu" in options.split(","):
            path, read = next(p for _, c, p in own if "cpu" in c.split(",")), v1_quota
        else:
            continue
        d, quotas = os.path.join(mountpoint, os.path.relpath(path, root)), []
        while True:
            quotas.append(read(d))
            if d == mountpoint:
                break
            d = os.path.dirname(d)
        limited = [q for q in quotas if q is not None]
        return min(limited) if limited else None
    raise RuntimeError("no cgroup cpu controller visible")


def test_machine_type_m_has_two_cpus_of_quota(sandboxed):
    assert isolated(machine_type="M", keep_alive=0)(cpu_quota)() == 2
    assert isolated(machine_type="XS", keep_alive=0)(cpu_quota)() == 0.25


def test_worker_is_unprivileged(sandboxed):
    @isolated(keep_alive=0)
    def who():
        import os

        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
        return os.getuid(), int(status["CapEff"].strip(), 16), int(status["NoNewPrivs"].strip())

    uid, caps, no_new_privs = who()
    assert uid != 0
    assert caps == 0
    assert no_new_privs == 1


def test_server_files_are_not_visible(sandboxed):
    secret = sandboxed.data_dir / f"secret-{uuid.uuid4().hex}.txt"
    secret.write_text("server state")

    @isolated(keep_alive=0)
    def look(path, data_dir):
        import os

        listing = os.listdir(data_dir) if os.path.isdir(data_dir) else []
        return os.path.exists(path), listing, os.path.exists(os.path.join(data_dir, "state.db"))

    try:
        exists, listing, state_db = look(str(secret), str(sandboxed.data_dir))
    finally:
        secret.unlink()
    assert not exists
    assert secret.name not in listing
    assert not state_db


def test_other_workers_tmp_is_not_visible(sandboxed):
    marker = f"/tmp/atoll-marker-{uuid.uuid4().hex}"

    @isolated(keep_alive=30)
    def write(path):
        open(path, "w").write("mine")
        import os

        return os.path.exists(path)

    @isolated(keep_alive=0)
    def read(path):
        import os

        return os.path.exists(path)

    assert write(marker)
    assert not read(marker)


def test_ps_shows_only_the_workers_processes(sandboxed):
    @isolated(keep_alive=0)
    def processes():
        import os

        out = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    out.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode())
                except OSError:
                    pass
        return out

    procs = processes()
    assert len(procs) <= 3, procs  # the agent, the runner, and nothing of the host's
    assert any(" worker " in p for p in procs), procs
    assert not any(" server " in p or "-m pytest" in p for p in procs), procs


def test_fork_bomb_is_stopped_by_the_pids_limit(sandboxed):
    @isolated(machine_type="S", keep_alive=0)
    def bomb():
        import os
        import signal
        import time

        children = []
        error = None
        try:
            for _ in range(5000):
                pid = os.fork()
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                children.append(pid)
        except OSError as exc:
            error = type(exc).__name__
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        return len(children), error

    try:
        children, error = bomb()
    except atoll.WorkerCrashedError:
        pass  # the limit may also starve the worker itself: it is torn down
    else:
        assert error == "BlockingIOError", (children, error)
        assert children < 1100
    assert sandboxed.alive()
    assert isolated()(lambda: "still serving")() == "still serving"


@pytest.mark.parametrize(
    "machine_type, match",
    [
        ("XL", r"machine type XL needs 8 CPU, 128 GiB.*this host has"),
        ("GPU-T4", r"machine type GPU-T4 needs .*GPU.*this host has"),
    ],
)
def test_type_that_never_fits_fails_at_once(server, machine_type, match, tmp_path):
    marker = tmp_path / "ran"

    @isolated(machine_type=machine_type)
    def touch():
        open(marker, "w").close()

    started = time.monotonic()
    with pytest.raises(atoll.MachineTypeError, match=match):
        touch()
    assert time.monotonic() - started < 10
    assert not marker.exists()


@pytest.fixture
def small_server(tmp_path):
    """A server whose capacity is two XS workers and one fake T4 GPU type,
    with a one-second queue timeout."""
    config = tmp_path / "atoll.yaml"
    config.write_text(
        "capacity:\n  cpus: 0.5\n"
        "gpus:\n  - {index: 0, model: T4}\n  - {index: 1, model: T4}\n"
        "machine_types:\n  - {name: T4-TINY, cpus: 0.25, memory: 256MiB, gpus: 1, gpu_model: T4}\n"
    )
    srv = Server(tmp_path / "data", ["--config", str(config), "--queue-timeout", "1s"])
    srv.credentials = atoll.CloudKeyCredentials(*srv.create_key())
    srv.start()
    yield srv
    srv.stop()


def test_full_host_gives_no_capacity_error(small_server):
    host, creds = atoll._host.CloudHost(small_server.address), small_server.credentials
    slow = isolated(machine_type="XS", keep_alive=0, host=host, credentials=creds)(lambda: __import__("time").sleep(6))
    quick = isolated(machine_type="XS", keep_alive=0, host=host, credentials=creds)(lambda: 1)
    assert quick() == 1  # builds the environment all three share, outside the timed part
    threads = [threading.Thread(target=slow) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(2.5)  # both slow calls hold the host's two XS slots
    try:
        with pytest.raises(atoll.NoCapacityError, match=r"no room for machine type XS \(0.25 CPU, 256 MiB\) after waiting 1s"):
            quick()
    finally:
        for t in threads:
            t.join()
    assert quick() == 1  # room again once they finished


def test_queued_call_says_once_that_it_waits_for_capacity(tmp_path, capfd):
    config = tmp_path / "atoll.yaml"
    config.write_text("capacity:\n  cpus: 0.25\n")  # room for one XS worker
    srv = Server(tmp_path / "data", ["--config", str(config), "--queue-timeout", "30s"])
    creds = atoll.CloudKeyCredentials(*srv.create_key())
    srv.start()
    try:
        options = dict(machine_type="XS", keep_alive=0, host=atoll._host.CloudHost(srv.address), credentials=creds)
        slow = isolated(**options)(lambda: __import__("time").sleep(4))
        quick = isolated(**options)(lambda: "ran after waiting")
        assert quick() == "ran after waiting"  # builds the environment both share
        holder = threading.Thread(target=slow)
        holder.start()
        time.sleep(1.5)  # the slow call holds the only slot
        try:
            capfd.readouterr()
            assert quick() == "ran after waiting"
            err = capfd.readouterr().err
        finally:
            holder.join()
    finally:
        srv.stop()
    waits = [line for line in err.splitlines() if "waiting for capacity" in line]
    assert waits == ["atoll: waiting for capacity for machine type XS (0.25 CPU, 256 MiB)"], err


@pytest.fixture
def fake_gpu_nodes():
    """Device nodes for the two declared GPUs: placeholders with NVIDIA's
    character major, never opened, on a host that has no GPU."""
    if os.geteuid() != 0:
        pytest.skip("creating device nodes needs root")
    made = []
    for i in range(2):
        node = Path(f"/dev/nvidia{i}")
        if not node.exists():
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(195, i))
            made.append(node)
    yield
    for node in made:
        node.unlink()


def test_gpus_are_assigned_exclusively(small_server, fake_gpu_nodes):
    host = atoll._host.CloudHost(small_server.address)

    @isolated(machine_type="T4-TINY", keep_alive=0, host=host, credentials=small_server.credentials)
    def visible(_):
        import os
        import time

        time.sleep(1)
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(visible, range(2)))
    assert sorted(results) == ["0", "1"]


def test_process_fallback_works_and_warns(tmp_path):
    """Without a sandbox (--sandbox process, as on a host without runc or
    root), calls still work, and the server says loudly that workers are
    not isolated."""
    srv = Server(tmp_path / "data", ["--sandbox", "process"])
    creds = atoll.CloudKeyCredentials(*srv.create_key())
    srv.start()
    try:
        host = atoll._host.CloudHost(srv.address)
        assert isolated(host=host, credentials=creds)(lambda: "plain process")() == "plain process"
        with pytest.raises(atoll.WorkerCrashedError) as info:
            isolated(host=host, credentials=creds)(lambda: __import__("os")._exit(4))()
        assert info.value.exit_code == 4
        env = {**os.environ, "ATOLL_HOST": srv.address, "ATOLL_KEY_ID": creds.key_id, "ATOLL_KEY_SECRET": creds.key_secret}
        status = subprocess.run([atoll_binary(), "status"], env=env, capture_output=True, text=True, check=True).stdout
        assert "sandbox:  process" in status
        assert "WARNING:" in status and "NOT isolated" in status
        assert "NOT isolated" in srv.log()
    finally:
        srv.stop()
