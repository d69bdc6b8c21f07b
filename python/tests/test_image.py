"""The server's container image (scripts/build-image.sh, an OCI image
layout made with umoci), run with runc from a runtime bundle unpacked from
the image, serves a call made from this process.

The server in the container runs its workers with --sandbox process:
nesting runc inside runc needs privileges a container should not get, and
the point here is the image (its binary, uv and Python suffice for a call),
not the worker sandbox, which the other tests cover. The container shares
the host's network namespace so that the server listens on this host's
loopback; everything else (mount, pid, ipc, uts) is its own. It trusts the
host's certificates and takes its proxy and index settings, so that uv in
it reaches the package index as this host does (a host behind a
TLS-inspecting proxy trusts that proxy's CA in its own store only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest

from atoll import CloudKeyCredentials, isolated
from atoll._host import CloudHost
from conftest import REPO, free_port

HOSTNAME = "atoll-image-test"
HOST_CERTS = "/etc/ssl/certs"
PASSED_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
              "NO_PROXY", "no_proxy", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    for tool in ("runc", "umoci", "mmdebstrap"):
        assert shutil.which(tool), f"{tool} is missing: scripts/setup.sh installs it"
    root = tmp_path_factory.mktemp("image")
    image = root / "image"
    # PYTHON: the image gets the uv locked for (and installed beside) this interpreter.
    subprocess.run(["bash", str(REPO / "scripts" / "build-image.sh"), str(image)],
                   env={**os.environ, "PYTHON": sys.executable}, check=True, capture_output=True, timeout=600)
    index = json.loads((image / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == ["atoll"]
    bundle = root / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{image}:atoll", str(bundle)],
                   check=True, capture_output=True, timeout=300)
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"][:2] == ["/usr/local/bin/atoll", "server"]  # the image's entrypoint and cmd
    return bundle


def _configure(bundle: Path, data: Path, args: list[str]) -> None:
    """The image's runtime config, with args for its entrypoint, no terminal,
    the host's network, and data bound at the image's data volume."""
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    config["process"]["args"] = ["/usr/local/bin/atoll", *args]
    config["process"]["terminal"] = False
    config["process"]["env"] += [f"{k}={os.environ[k]}" for k in PASSED_ENV if k in os.environ]
    config["hostname"] = HOSTNAME
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"]
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/var/lib/atoll"] + [
        {"destination": "/var/lib/atoll", "type": "bind", "source": str(data), "options": ["rbind", "rw"]},
        {"destination": HOST_CERTS, "type": "bind", "source": HOST_CERTS, "options": ["rbind", "ro"]},
    ]
    path.write_text(json.dumps(config))


def test_a_call_through_the_server_in_the_image(bundle, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _configure(bundle, data, ["keys", "create", "--data-dir", "/var/lib/atoll", "--json"])
    created = subprocess.run(["runc", "run", "--bundle", str(bundle), f"atoll-key-{uuid.uuid4().hex[:8]}"],
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)

    address = f"127.0.0.1:{free_port()}"
    _configure(bundle, data, ["server", "--data-dir", "/var/lib/atoll", "--listen", address, "--sandbox", "process"])
    container = f"atoll-server-{uuid.uuid4().hex[:8]}"
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["runc", "run", "--bundle", str(bundle), container],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        with grpc.insecure_channel(address) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=60)
            except grpc.FutureTimeoutError:
                pytest.fail(f"the server in the image did not start:\n{log_path.read_text(errors='replace')}")

        def where() -> tuple[str, str, str]:
            import platform
            import shutil
            import sys

            return platform.node(), sys.base_prefix, shutil.which("atoll")

        remote = isolated(host=CloudHost(address), credentials=CloudKeyCredentials(key["key_id"], key["key_secret"]))
        node, prefix, atoll = remote(where)()
        # Ran in the container: its hostname, the image's Python and binary.
        assert (node, prefix, atoll) == (HOSTNAME, "/usr", "/usr/local/bin/atoll"), log_path.read_text(errors="replace")
        assert (data / "state.db").exists()  # the server's state is on the image's data volume
    finally:
        subprocess.run(["runc", "kill", container, "TERM"], capture_output=True, timeout=10)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run(["runc", "kill", container, "KILL"], capture_output=True, timeout=10)
            proc.wait(timeout=10)
        subprocess.run(["runc", "delete", "--force", container], capture_output=True, timeout=10)
    assert proc.returncode == 0, log_path.read_text(errors="replace")
