#!/usr/bin/env bash
# Builds the atoll platform wheels, each carrying an atoll binary
# cross-compiled for its target (CGO_ENABLED=0: the SQLite driver is pure
# Go), and the sdist, into dist/ (or $1). Needs Go and the locked build
# tools (scripts/setup.sh installs them). On macOS the SDK and host=local
# work; the server runs workers as plain processes and warns that it cannot
# sandbox them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=$(realpath -m "${1:-dist}")
TARGETS=(linux/amd64 linux/arm64 darwin/arm64 darwin/amd64)

mkdir -p "$OUT"
"$PYTHON" -m build --sdist --no-isolation --outdir "$OUT" python
for target in "${TARGETS[@]}"; do
	echo "build-wheels: $target"
	GOOS=${target%/*} GOARCH=${target#*/} "$PYTHON" -m build --wheel --no-isolation --outdir "$OUT" python >/dev/null
done
ls -1 "$OUT"
