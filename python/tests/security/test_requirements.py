"""Attack 3 of the trust boundary: an account asks the server to install
one of the server host's own directories into its environment, through
every spelling of a local requirement. Each is refused before anything is
built, with a message naming the requirement, and the account's next call
works. A server started with --allow-local-requirements installs the same
directory, which shows the attack is real and only the guard stops it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import atoll
from atoll import CloudKeyCredentials, isolated
from atoll._host import CloudHost
from conftest import Server

SECRET = "the server host's own file"


@pytest.fixture(scope="module")
def host_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package in a git repository on the server's host, standing for any
    directory an attacker would like to read (/srv/x, /etc, a key store)."""
    repo = tmp_path_factory.mktemp("srv") / "secretpkg"
    (repo / "secretpkg").mkdir(parents=True)
    (repo / "secretpkg" / "__init__.py").write_text(f"SECRET = {SECRET!r}\n")
    (repo / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "secretpkg"\nversion = "1.0"\n\n[tool.setuptools]\npackages = ["secretpkg"]\n'
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "secret"], check=True)
    return repo


def local_forms(repo: Path) -> list[str]:
    climb = "x/" + "../" * 40 + str(repo).lstrip("/")  # relative to wherever uv runs
    return [
        f"secretpkg @ git+file://{repo}",
        f"secretpkg @ GIT+FILE://{repo}",
        f"secretpkg @ hg+file://{repo}",
        f"secretpkg @ file://{repo}",
        f"secretpkg @ file:{repo}",
        f"secretpkg @ {repo}",
        f"secretpkg@{climb}",
        climb,
        str(repo),
        f"file://{repo}",
        f"git+file://{repo}",
        "~/secretpkg",
        "../../../secretpkg",
        "secretpkg-1.0.tar.gz",
    ]


def repr_in(requirement: str, message: str) -> bool:
    """Whether the message names the requirement (quoted as Go quotes it)."""
    return '"' + requirement.replace("\\", "\\\\") + '"' in message


def read_secret():
    import secretpkg

    return secretpkg.SECRET


@pytest.mark.parametrize("form", range(len(local_forms(Path("/srv/x")))))
def test_local_requirement_is_refused(server: Server, host_repo: Path, form: int):
    requirement = local_forms(host_repo)[form]
    creds = CloudKeyCredentials(*server.create_key("attacker"))
    steal = isolated(requirements=[requirement], credentials=creds, keep_alive=0)(read_secret)
    with pytest.raises(atoll.EnvironmentBuildError) as info:
        steal()
    message = str(info.value)
    assert "names a path on the server" in message and "--allow-local-requirements" in message, message
    assert repr_in(requirement, message), message
    began = [line for line in server.log().splitlines() if 'msg="building environment"' in line and "secretpkg" in line]
    assert not began, began
    assert server.alive()
    assert isolated(credentials=creds)(lambda: "alive")() == "alive"


@pytest.mark.parametrize(
    "requirement, says",
    [
        ("-e /srv/secretpkg", "looks like an option"),
        ("--index-url=http://127.0.0.1:9/simple", "looks like an option"),
        ("--extra-index-url http://127.0.0.1:9/simple", "looks like an option"),
        ("-r /etc/passwd", "looks like an option"),
        ("-c /etc/passwd", "looks like an option"),
        ("--trusted-host 127.0.0.1", "looks like an option"),
        ("secretpkg @ https://127.0.0.1:9/${HOME}/x.whl", r"\$\{\.\.\.\}"),
        ("secretpkg @ git+ssh://-oProxyCommand=pwned/repo", "starts with '-'"),
        ("secretpkg @ ftp://127.0.0.1/x.tar.gz", "URL scheme"),
        ("six foo", "not a PEP 508 requirement"),
    ],
)
def test_options_and_unparseable_requirements_are_refused(server: Server, requirement: str, says: str):
    steal = isolated(requirements=[requirement], keep_alive=0)(lambda: 1)
    with pytest.raises(atoll.EnvironmentBuildError, match=says):
        steal()
    assert server.alive()
    assert isolated()(lambda: "alive")() == "alive"


def test_allowed_local_requirement_installs_the_hosts_directory(tmp_path: Path, host_repo: Path):
    """The control: the operator's flag lets the same requirement through,
    so the refusals above are the guard's doing."""
    srv = Server(tmp_path / "data", ["--allow-local-requirements"])
    creds = CloudKeyCredentials(*srv.create_key())
    srv.start()
    try:
        f = isolated(requirements=[f"secretpkg @ git+file://{host_repo}"], host=CloudHost(srv.address), credentials=creds)
        assert f(read_secret)() == SECRET
    finally:
        srv.stop()
    assert "panic" not in srv.log()
