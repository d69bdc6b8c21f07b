"""The atoll package's build backend: setuptools, plus the atoll binary.

A wheel is platform-specific: the Go binary (built here, at wheel build
time, from this repository's Go module) goes in as the wheel's script
`atoll`, so that `pip install` puts it on the venv's PATH, and the wheel is
tagged for the binary's GOOS/GOARCH (the `go env` target: the build
machine's own unless GOOS/GOARCH say otherwise; $GO names the go
command). The binary is static (CGO_ENABLED=0; the SQLite driver is pure
Go), so one Linux wheel serves glibc and musl systems alike and carries
both tags.

The binary embeds the SDK's sources (python/embed.go) from the Go module,
not from the wheel, so building it needs nothing the wheel build makes.

An sdist carries the Go module's sources under gosrc/, so a wheel built
from it (pip install of the sdist) builds the binary where Go is present.
Editable installs (scripts/setup.sh) stay pure Python and build no Go: a
checkout has its own bin/atoll.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401 - the backend's hooks, unchanged
    build_editable,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

PROJECT = Path(__file__).resolve().parents[1]
GO_MODULE_LINE = "module github.com/atoll-dev/atoll"
SDIST_GO_DIR = "gosrc"

# Platform tags per Go target. Linux: a static binary runs on any glibc or
# musl system; the glibc floor is manylinux2014's, the oldest pip knows
# well. macOS: Go 1.26 supports macOS 12 and later.
PLATFORM_TAGS = {
    ("linux", "amd64"): ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "musllinux_1_1_x86_64"],
    ("linux", "arm64"): ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "musllinux_1_1_aarch64"],
    ("darwin", "amd64"): ["macosx_12_0_x86_64"],
    ("darwin", "arm64"): ["macosx_12_0_arm64"],
}


class BuildError(RuntimeError):
    """The wheel cannot be built (no Go, no Go sources, an unsupported target)."""


def build_sdist(sdist_directory, config_settings=None):
    """setuptools' sdist, with the Go sources and this backend added."""
    name = _setuptools.build_sdist(sdist_directory, config_settings)
    path = Path(sdist_directory) / name
    root = name[: -len(".tar.gz")]
    module = _go_module()
    with tempfile.TemporaryDirectory() as tmp:
        rewritten = Path(tmp) / name
        with tarfile.open(path) as src, tarfile.open(rewritten, "w:gz", format=tarfile.PAX_FORMAT) as dst:
            present = set()
            for member in src.getmembers():
                present.add(member.name)
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
            extra = [(f"{root}/_backend/{Path(__file__).name}", Path(__file__))]
            extra += [(f"{root}/{SDIST_GO_DIR}/{rel}", module / rel) for rel in _go_sources(module)]
            for arcname, file in extra:
                if arcname not in present:
                    dst.add(file, arcname)
        shutil.move(rewritten, path)
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    """setuptools' pure wheel, with the atoll binary added as a script and
    the platform tags of the binary's target."""
    go = shutil.which(os.environ.get("GO", "go"))
    if go is None:
        raise BuildError("building the atoll wheel needs Go (the wheel carries the atoll binary); install Go 1.26+")
    module = _go_module()
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "atoll"
        env = {**os.environ, "CGO_ENABLED": "0"}
        target = tuple(subprocess.run([go, "env", "GOOS", "GOARCH"], cwd=module, env=env, check=True,
                                      capture_output=True, text=True).stdout.split())
        tags = PLATFORM_TAGS.get(target)
        if tags is None:
            raise BuildError(f"no wheel platform tag for GOOS/GOARCH {'/'.join(target)}; supported: "
                             + ", ".join("/".join(t) for t in PLATFORM_TAGS))
        subprocess.run([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), "./cmd/atoll"],
                       cwd=module, env=env, check=True)
        pure = _setuptools.build_wheel(tmp, config_settings, metadata_directory)
        return _platform_wheel(Path(tmp) / pure, binary, tags, Path(wheel_directory))


def _go_module() -> Path:
    """The Go module's root: the checkout around this project, or the
    sources an sdist carries."""
    for candidate in (PROJECT.parent, PROJECT / SDIST_GO_DIR):
        go_mod = candidate / "go.mod"
        if go_mod.is_file() and GO_MODULE_LINE in go_mod.read_text().splitlines():
            return candidate
    raise BuildError(f"no atoll Go sources: {PROJECT} is neither inside the atoll repository nor an atoll sdist")


def _go_sources(module: Path) -> list[str]:
    """What `go build ./cmd/atoll` reads, relative to the module: go.mod,
    go.sum, the non-test Go files, the Python files python/embed.go embeds,
    and the dashboard's templates and static files (internal/dashboard
    embeds them)."""
    files = ["go.mod", "go.sum", "python/embed.go", "python/runtime.lock", "python/runtime.in"]
    for top in ("cmd", "internal", "api"):
        files += [p.relative_to(module).as_posix() for p in sorted((module / top).rglob("*.go"))
                  if not p.name.endswith("_test.go") and "testdata" not in p.parts]
    for pattern in ("atoll/*.py", "atoll/v1/*.py"):
        files += [p.relative_to(module).as_posix() for p in sorted((module / "python").glob(pattern))]
    for pattern in ("templates/*.html", "static/*"):
        files += [p.relative_to(module).as_posix() for p in sorted((module / "internal" / "dashboard").glob(pattern))]
    return files


def _platform_wheel(pure: Path, binary: Path, tags: list[str], out_dir: Path) -> str:
    """Rewrites the pure wheel: the binary as {dist}.data/scripts/atoll
    (executable), WHEEL saying platlib and the platform tags, a new RECORD,
    and the file named for the tags."""
    name, version = pure.name.split("-")[:2]
    dist_info, data = f"{name}-{version}.dist-info", f"{name}-{version}.data"
    wheel_name = f"{name}-{version}-py3-none-{'.'.join(tags)}.whl"
    record = []
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(pure) as src, zipfile.ZipFile(out_dir / wheel_name, "w", zipfile.ZIP_DEFLATED) as dst:

        def write(info: zipfile.ZipInfo, payload: bytes) -> None:
            dst.writestr(info, payload)
            digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()
            record.append(f"{info.filename},sha256={digest},{len(payload)}")

        for info in src.infolist():
            if info.filename in (f"{dist_info}/RECORD", f"{dist_info}/WHEEL"):
                continue
            write(info, src.read(info))
        wheel = [line for line in src.read(f"{dist_info}/WHEEL").decode().splitlines()
                 if line and not line.startswith(("Tag:", "Root-Is-Purelib:"))]
        wheel += ["Root-Is-Purelib: false"] + [f"Tag: py3-none-{tag}" for tag in tags]
        write(_entry(f"{dist_info}/WHEEL", 0o644), ("\n".join(wheel) + "\n").encode())
        write(_entry(f"{data}/scripts/atoll", 0o755), binary.read_bytes())
        record.append(f"{dist_info}/RECORD,,")
        dst.writestr(_entry(f"{dist_info}/RECORD", 0o644), "\n".join(record) + "\n")
    return wheel_name


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info
