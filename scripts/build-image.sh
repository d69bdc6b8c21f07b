#!/usr/bin/env bash
# Builds an OCI image of the atoll server, locally (no registry): a Debian
# bookworm base with Python 3 (which the workers run on) from mmdebstrap, a
# layer with the atoll binary (static, built from this checkout) and the
# locked uv (which builds environments), assembled with umoci into an OCI
# image layout at $1 (default dist/image), tag "atoll".
#
# Run it with any OCI runtime: `umoci unpack --image dist/image:atoll BUNDLE`
# gives a runtime bundle for `runc run` (python/tests/test_image.py does
# that). A server inside a container runs its workers with --sandbox process
# unless the container may start nested sandboxes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
GO=${GO:-go}
SUITE=${SUITE:-bookworm}
OUT=$(realpath -m "${1:-dist/image}")
UV=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/uv

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"

# The base: only what the server and its workers use.
mmdebstrap --quiet --variant=essential --include=python3,ca-certificates \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' "$SUITE" "$work/base.tar"

mkdir -p "$work/atoll/usr/local/bin" "$work/atoll/var/lib/atoll"
CGO_ENABLED=0 "$GO" build -trimpath -ldflags='-s -w' -o "$work/atoll/usr/local/bin/atoll" ./cmd/atoll
install -m 0755 "$UV" "$work/atoll/usr/local/bin/uv"
tar -C "$work/atoll" --owner=0 --group=0 --numeric-owner -cf "$work/atoll.tar" usr var

umoci init --layout "$OUT"
umoci new --image "$OUT:atoll"
umoci raw add-layer --image "$OUT:atoll" "$work/base.tar"
umoci raw add-layer --image "$OUT:atoll" "$work/atoll.tar"
umoci config --image "$OUT:atoll" \
	--config.entrypoint /usr/local/bin/atoll \
	--config.cmd server --config.cmd --data-dir --config.cmd /var/lib/atoll \
	--config.env PATH=/usr/local/bin:/usr/bin:/bin \
	--config.volume /var/lib/atoll --config.exposedports 28655/tcp \
	--config.workingdir / --author atoll
umoci gc --layout "$OUT"
echo "build-image: wrote $OUT (tag atoll)"
