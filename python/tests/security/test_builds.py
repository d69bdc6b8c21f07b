

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

    def pth_ran_here():
        import os

        return os.path.exists(cfg["cache"])  # the worker does not even see the cache

    assert isolated(requirements=[requirement, "six"], **accounts.attacker)(pth_ran_here)() is False
    assert not list((server.data_dir / "envs" / "cache").rglob(f"planted-{cfg['token']}"))
    assert isolated(requirements=["six"], **accounts.victim)(six_fingerprint)()["planted"] is False
