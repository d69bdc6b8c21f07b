#!/usr/bin/env bash
# Re-resolves the two lock files from their inputs, with hashes, for every
# platform and every Python the SDK supports:
#   python/requirements.lock  the SDK's dependencies and test tools, which
#                             setup.sh (so CI and the tests) installs;
#   python/runtime.lock       what the server puts beside each worker
#                             (embedded in the binary; its hash is part of
#                             the runtime directory's key).
# Run it to take newer releases, then run the tests and commit the locks.
set -euo pipefail
cd "$(dirname "$0")/../python"
UV=${UV:-uv}
common=(--universal --python-version 3.10 --generate-hashes --no-header --quiet)
"$UV" pip compile "${common[@]}" pyproject.toml build-requirements.in --extra test -o requirements.lock
"$UV" pip compile "${common[@]}" runtime.in -o runtime.lock
echo "lock: wrote python/requirements.lock and python/runtime.lock"
