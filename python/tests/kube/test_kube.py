"""The end-to-end call suite against `atoll server --launcher kubernetes`,
on the real single-node cluster of scripts/kube-up.sh (`make test-kube`
brings it up and down): every worker is a pod that dials back.

The suite's own tests (values, exceptions, output, keep_alive, @cached,
/data, the reference examples) are imported from the local suite and run
here against this module's `server`; the tests below them are the
cluster's own: the pods' specification as the API server holds it, the
error cases, clean-up and the node's archive cache.

Without KUBECONFIG this module fails rather than skips: it only runs when
asked for (make test-kube), and CI asks for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from atoll import (
    CloudKeyCredentials,
    MachineTypeError,
    NoCapacityError,
    OutOfMemoryError,
    WorkerCrashedError,
    isolated,
)

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from conftest import REPO, Server, atoll_binary, wait_until  # noqa: E402

from atoll._host import CloudHost  # noqa: E402

# The local suite's tests, run here against the cluster. pytest collects
# what a module holds, and resolves their fixtures (server, creds,
# run_script, examples_server) from this module first.
from test_calls import (  # noqa: E402,F401
    test_closures_lambdas_and_local_classes,
    test_exception_that_cannot_be_unpickled_becomes_remote_error,
    test_exception_type_and_remote_traceback,
    test_large_argument_and_result,
    test_output_is_captured_at_the_file_descriptor_level,
    test_output_streams_while_the_function_runs,
    test_returns_value_with_args_and_kwargs,
    test_unknown_machine_type_fails_before_running,
    test_unpicklable_argument_is_named,
)
from test_examples import (  # noqa: E402,F401
    test_nested_calls_example,
    test_quickstart,
)
from test_sync import (  # noqa: E402,F401
    ACCOUNT,
    test_functions_share_data_across_calls_and_workers,
    test_reference_example_lists_synced_dir,
)
from test_workers import (  # noqa: E402,F401
    test_cached_results_per_argument_in_a_warm_worker,
    test_concurrent_calls_get_separate_workers,
    test_each_call_restarts_the_timer,
    test_keep_alive_zero_tears_down_at_once,
    test_new_worker_starts_with_an_empty_cache,
    test_warm_worker_is_reused_and_keeps_globals,
    test_worker_is_gone_after_keep_alive,
)

BRIDGE_IP = os.environ.get("ATOLL_KUBE_BRIDGE_IP", "10.88.77.1")
NODE = "localhost"


def kubeconfig() -> str:
    path = os.environ.get("KUBECONFIG")
    if not path or not Path(path).exists():
        pytest.fail("KUBECONFIG names no cluster: run `eval $(bash scripts/kube-up.sh | tail -n1)` first, or `make test-kube`")
    return path


def kubectl(*args: str, check: bool = True, input: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig(), *args], capture_output=True, text=True, timeout=120, input=input
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="module")
def worker_image() -> str:
    """The worker image, built from the binary under test."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "kube-image.sh"), "worker", atoll_binary()],
        check=True, capture_output=True, text=True, timeout=900,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def namespace():
    """A namespace of the module's own that enforces the restricted profile."""
    ns = f"atoll-e2e-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", ns)
    kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest")
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false")
    # Volumes of the namespace's claims (cluster-scoped) go with it.
    for pv in json.loads(kubectl("get", "pv", "-o", "json"))["items"]:
        if (pv["spec"].get("claimRef") or {}).get("namespace") == ns:
            kubectl("delete", "pv", pv["metadata"]["name"], "--wait=false", check=False)


def node_allocatable() -> tuple[float, int]:
    node = json.loads(kubectl("get", "node", NODE, "-o", "json"))
    alloc = node["status"]["allocatable"]
    cpu = alloc["cpu"]
    cpus = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    mem = alloc["memory"]
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    memory = int(mem[:-2]) * units[mem[-2:]] if mem[-2:] in units else int(mem)
    return cpus, memory


# The reference examples name types a 2-CPU node cannot hold (M: 2 CPUs,
# L: 4): the operator's catalog is configurable, the examples are not.
CATALOG = (
    "machine_types:\n"
    "  - {name: M, cpus: 0.5, memory: 1GiB}\n"
    "  - {name: L, cpus: 0.5, memory: 1GiB}\n"
    "  - {name: GPU, cpus: 0.5, memory: 1GiB, gpus: 0}\n"
)


class KubeServer(Server):
    """An atoll server whose workers are pods in namespace."""

    # Its launcher answers once its informers have synced with the API
    # server and what a killed server left is gone; on a busy test cluster
    # that has taken more than 30 s.
    start_timeout = 90

    def __init__(self, root: Path, namespace: str, image: str, name: str, extra: list[str] | None = None, config: str = CATALOG):
        cfg = root / "atoll.yaml"
        root.mkdir(parents=True, exist_ok=True)
        cfg.write_text(config)
        self.cache_dir = root / "node-cache"
        self.name = name
        super().__init__(root / "data", [
            "--launcher", "kubernetes", "--kubeconfig", kubeconfig(), "--namespace", namespace,
            "--worker-image", image, "--worker-image-pull-policy", "Never",
            "--advertise-address", BRIDGE_IP, "--kube-server-name", name,
            "--kube-local-node", NODE, "--kube-node-cache", str(self.cache_dir),
            "--config", str(cfg), *(extra or []),
        ])

    def pods(self) -> list[dict]:
        out = kubectl("get", "pods", "-n", self.namespace, "-l", f"atoll.dev/server={self.name}", "-o", "json")
        return json.loads(out)["items"]

    @property
    def namespace(self) -> str:
        return self.extra_args[self.extra_args.index("--namespace") + 1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, namespace, worker_image):
    """The module's server, as the local suite's `server` fixture gives it:
    a key of account "default" in the environment, ATOLL_HOST set."""
    srv = KubeServer(tmp_path_factory.mktemp("kube"), namespace, worker_image, "e2e")
    key_id, secret = srv.create_key()
    srv.start()
    saved = {k: os.environ.get(k) for k in ("ATOLL_HOST", "ATOLL_KEY_ID", "ATOLL_KEY_SECRET")}
    os.environ.update(ATOLL_HOST=srv.address, ATOLL_KEY_ID=key_id, ATOLL_KEY_SECRET=secret)
    yield srv
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    srv.stop()
    assert "panic" not in srv.log(), srv.log()
    assert wait_until(lambda: not srv.pods(), timeout=60), "the server's pods outlived it"


@pytest.fixture(scope="module")
def creds(server) -> CloudKeyCredentials:
    return CloudKeyCredentials(*server.create_key(ACCOUNT))


@pytest.fixture
def run_script(server, tmp_path):
    def run(source: str, timeout: float = 180, **popen) -> subprocess.CompletedProcess:
        script = tmp_path / "script.py"
        script.write_text(source)
        env = {**os.environ, "ATOLL_HOST": server.address, "PYTHONUNBUFFERED": "1"}
        return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout, env=env, **popen)

    return run


@pytest.fixture(scope="module")
def examples_server(server, tmp_path_factory):
    key_id, secret = server.create_key()
    server.env = {
        **os.environ, "ATOLL_HOST": server.address, "ATOLL_KEY_ID": key_id, "ATOLL_KEY_SECRET": secret,
        "PYTHONUNBUFFERED": "1", "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("examples-cache")),
    }
    return server


def pod_of(server: KubeServer, worker_id: str) -> dict:
    [pod] = [p for p in server.pods() if p["metadata"]["labels"]["atoll.dev/worker"] == worker_id]
    return pod


def current_worker_ids(server) -> set[str]:
    return {p["metadata"]["labels"]["atoll.dev/worker"] for p in server.pods()}


# The cluster's own tests.


def test_worker_pod_as_the_api_server_holds_it(server):
    @isolated(keep_alive=30, machine_type="S")
    def where():
        import os
        import socket

        # (the kubelet's own ..data links aside)
        return socket.gethostname(), os.getuid(), sorted(n for n in os.listdir("/atoll/secret") if not n.startswith(".."))

    host, uid, secret_files = where()
    assert host.startswith("atoll-w-")
    worker = host[len("atoll-"):]
    pod = pod_of(server, worker)
    labels = pod["metadata"]["labels"]
    assert labels["atoll.dev/account"] == "default"
    assert labels["atoll.dev/machine-type"] == "S"
    assert labels["app.kubernetes.io/managed-by"] == "atoll"
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    for c in spec["containers"] + spec["initContainers"]:
        assert c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "500m", "memory": "1Gi"}
        assert all("TOKEN" not in e["name"] or e["name"] == "ATOLL_WORKER_TOKEN_FILE" for e in c.get("env", []))
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert uid == 65534
    assert secret_files == ["archive-credential", "token"]
    # The namespace enforces the restricted profile: a pod that breaks it
    # (root, privilege escalation allowed) is refused.
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "not-restricted"},
           "spec": {"containers": [{"name": "c", "image": "localhost/atoll-pause:3.10"}]}}
    proc = subprocess.run(["kubectl", "--kubeconfig", kubeconfig(), "-n", server.namespace, "create", "-f", "-"],
                          input=json.dumps(bad), capture_output=True, text=True)
    assert proc.returncode != 0 and "restricted" in proc.stderr, proc.stderr
    policy = json.loads(kubectl("get", "networkpolicy", "-n", server.namespace, "atoll-workers-e2e", "-o", "json"))
    egress = policy["spec"]["egress"]
    assert [peer["ipBlock"]["cidr"] for peer in egress[0]["to"]] == [f"{BRIDGE_IP}/32"]


def test_keep_alive_expiry_deletes_the_pod(server):
    @isolated(keep_alive=1)
    def host():
        import socket

        return socket.gethostname()

    worker = host()[len("atoll-"):]
    assert worker in current_worker_ids(server)
    assert wait_until(lambda: worker not in current_worker_ids(server), timeout=30)
    assert not [s for s in json.loads(kubectl("get", "secrets", "-n", server.namespace, "-o", "json"))["items"]
                if s["metadata"]["name"] == f"atoll-{worker}"]


def test_second_pod_on_the_node_uses_the_cached_environment(server):
    @isolated(keep_alive=0, requirements=["six==1.16.0"])
    def six_version():
        import six

        return six.__version__

    # The first pod may find the runtime and SDK archives cached by earlier
    # tests, but not this environment.
    assert six_version() == "1.16.0"

    @isolated(keep_alive=30, requirements=["six==1.16.0"])
    def host_again():
        import socket

        import six

        return socket.gethostname(), six.__version__

    host, version = host_again()
    assert version == "1.16.0"
    fetch_logs = kubectl("logs", "-n", server.namespace, host, "-c", "fetch").splitlines()
    assert fetch_logs and all("cached on this node" in line for line in fetch_logs), fetch_logs


def test_nested_calls_dial_the_server_from_the_pod(server):
    @isolated(keep_alive=0)
    def inner(x):
        return x + 1

    @isolated(keep_alive=0)
    def outer(x):
        return inner(x) * 10

    assert outer(1) == 20


def test_the_gateway_keeps_its_mac_address_as_pods_come_and_go(server):
    # A bridge left to choose its own MAC address takes the lowest of its
    # ports': each pod that came or went could change it under the ARP
    # cache of every other pod, whose packets to the server were then lost.
    bridge = Path("/sys/class/net/atoll-cni0")
    assert (bridge / "addr_assign_type").read_text().strip() == "3"  # NET_ADDR_SET: chosen, never a port's

    @isolated(keep_alive=30)
    def gateway_mac(ip):
        with open("/proc/net/arp") as f:
            return [line.split()[3] for line in f if line.split()[0] == ip]

    @isolated(keep_alive=0)
    def elsewhere():
        return 1

    before = gateway_mac(BRIDGE_IP)
    assert elsewhere() == 1
    assert gateway_mac(BRIDGE_IP) == before == [(bridge / "address").read_text().strip()]


def test_out_of_memory_is_out_of_memory_error(server):
    @isolated(keep_alive=0, machine_type="XS")
    def hog():
        chunks = []
        while True:
            chunks.append(bytearray(64 << 20))

    with pytest.raises(OutOfMemoryError):
        hog()


def test_deleted_pod_mid_call_is_worker_crashed(server):
    @isolated(keep_alive=0)
    def slow():
        import socket
        import time

        print("started on", socket.gethostname(), flush=True)
        time.sleep(120)

    before = current_worker_ids(server)

    def delete_when_running():
        def new_pod():
            ids = current_worker_ids(server) - before
            return ids and all(p["status"].get("phase") == "Running" for p in server.pods()
                               if p["metadata"]["labels"]["atoll.dev/worker"] in ids) and ids
        assert wait_until(new_pod, timeout=60)
        time.sleep(1)  # the call is under way
        for worker in current_worker_ids(server) - before:
            kubectl("delete", "pod", "-n", server.namespace, f"atoll-{worker}", "--wait=false")

    t = threading.Thread(target=delete_when_running)
    t.start()
    start = time.monotonic()
    with pytest.raises(WorkerCrashedError):
        slow()
    t.join()
    assert time.monotonic() - start < 60


def test_machine_type_no_node_fits(server):
    cpus, memory = node_allocatable()

    @isolated(machine_type="XL")  # 8 CPUs, 128 GiB
    def never():
        return 1

    if cpus >= 8 and memory >= 128 << 30:
        pytest.fail("this node fits XL; the test needs a smaller one")
    with pytest.raises(MachineTypeError, match="XL"):
        never()


@pytest.fixture(scope="module")
def overcommitted(tmp_path_factory, namespace, worker_image):
    """A server that believes in more capacity than the node has, so the
    Kubernetes scheduler is the one that refuses; and a type that fits the
    node once."""
    _, memory = node_allocatable()
    big = int(memory * 0.6) >> 20
    config = CATALOG + f"  - {{name: BIG, cpus: 0.1, memory: {big}MiB}}\ncapacity:\n  cpus: 64\n  memory: 4TiB\n"
    srv = KubeServer(tmp_path_factory.mktemp("kube-over"), namespace, worker_image, "over",
                     ["--queue-timeout", "10s"], config=config)
    creds = CloudKeyCredentials(*srv.create_key())
    srv.start()
    yield srv, creds
    srv.stop()


def test_unschedulable_pod_is_no_capacity_with_the_schedulers_reason(overcommitted):
    srv, creds = overcommitted

    @isolated(machine_type="BIG", keep_alive=0, credentials=creds, host=CloudHost(srv.address))
    def busy():
        import time

        time.sleep(15)
        return "ran"

    # Two calls at once need two BIG pods; the node takes one.
    results, errors = [], []

    def call():
        try:
            results.append(busy())
        except Exception as e:  # noqa: BLE001 - any other is the test's failure, shown below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["ran"] and len(errors) == 1, (results, errors)
    assert isinstance(errors[0], NoCapacityError), errors[0]
    assert "0/1 nodes are available" in str(errors[0]) and "Insufficient memory" in str(errors[0]), errors[0]
    assert wait_until(lambda: not srv.pods(), timeout=30)


def test_image_pull_failure_names_the_image(tmp_path, namespace):
    srv = KubeServer(tmp_path / "missing-image", namespace, "localhost/atoll-worker:does-not-exist", "missing")
    creds = CloudKeyCredentials(*srv.create_key())
    srv.start()
    try:
        @isolated(keep_alive=0, credentials=creds, host=CloudHost(srv.address))
        def f():
            return 1

        with pytest.raises(WorkerCrashedError, match="localhost/atoll-worker:does-not-exist"):
            f()
        assert wait_until(lambda: not srv.pods(), timeout=30)
    finally:
        srv.stop()


def test_restart_deletes_what_the_last_run_left(tmp_path, namespace, worker_image):
    root = tmp_path / "restart"
    first = KubeServer(root, namespace, worker_image, "restart")
    creds = CloudKeyCredentials(*first.create_key())
    first.start()

    @isolated(keep_alive=300, credentials=creds, host=CloudHost(first.address))
    def warm():
        return 1

    assert warm() == 1
    assert len(first.pods()) == 1
    first.proc.kill()  # no clean shutdown: the pod stays behind
    first.proc.wait()
    assert len(first.pods()) == 1
    second = KubeServer(root, namespace, worker_image, "restart")
    second.start()
    try:
        assert wait_until(lambda: not second.pods(), timeout=30)
    finally:
        second.stop()


def test_deployment_manifests_grant_the_server_its_namespace_only(tmp_path):
    import shutil

    ns = f"atoll-deploy-{uuid.uuid4().hex[:6]}"
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")  # kustomize takes relative bases only
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {ns}\n"
        "resources:\n  - ../deploy\n"
        "patches:\n  - target: {kind: Namespace, name: atoll}\n"
        f"    patch: '[{{\"op\": \"replace\", \"path\": \"/metadata/name\", \"value\": \"{ns}\"}}]'\n"
        "  - target: {kind: Deployment, name: atoll-server}\n"
        "    patch: '[{\"op\": \"replace\", \"path\": \"/spec/replicas\", \"value\": 0}]'\n"
    )
    manifests = subprocess.run(["kubectl", "kustomize", str(overlay)], check=True, capture_output=True, text=True).stdout
    kubectl("apply", "-f", "-", input=manifests)
    try:
        sa = f"system:serviceaccount:{ns}:atoll-server"

        def can(*args: str) -> bool:
            return kubectl("auth", "can-i", "--as", sa, *args, check=False).strip() == "yes"

        for verb, resource in [("create", "pods"), ("delete", "pods"), ("watch", "pods"), ("create", "secrets"),
                               ("create", "networkpolicies.networking.k8s.io"), ("create", "persistentvolumeclaims")]:
            assert can(verb, resource, "-n", ns), (verb, resource)
        for args in [("create", "pods", "-n", "default"), ("get", "secrets", "-n", "kube-system"),
                     ("list", "nodes"), ("create", "persistentvolumes"), ("create", "pods", "--subresource", "exec", "-n", ns),
                     ("update", "pods", "-n", ns)]:
            assert not can(*args), args
        labels = json.loads(kubectl("get", "namespace", ns, "-o", "json"))["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    finally:
        kubectl("delete", "namespace", ns, "--wait=false")
