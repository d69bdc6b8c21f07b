#!/usr/bin/env bash
# The non-blocking check against the newest releases: runs the Python suite
# with the newest cloudpickle, grpcio and protobuf the index serves, on both
# sides (the caller's venv, and workers' runtimes through ATOLL_RUNTIME_LOCK),
# instead of the locked versions. A failure here means the next upstream
# release breaks atoll: fix it, then take the new versions with
# scripts/lock.sh. CI runs the locked suite (scripts/test.sh), not this one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
uv=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/uv
venv=$PWD/.latest/venv
rm -rf .latest && mkdir -p .latest
"$uv" venv --quiet --python python3 "$venv"
# The SDK and its test extras at their newest, then the three packages a
# call travels through at their newest even past the SDK's caps: that is how
# a new major is found before users meet it.
"$uv" pip install --quiet --python "$venv/bin/python" --upgrade -e "python[test]" setuptools
"$uv" pip install --quiet --python "$venv/bin/python" --upgrade cloudpickle grpcio protobuf
printf 'cloudpickle\ngrpcio\nprotobuf\n' >.latest/runtime.txt
echo "test-latest: $("$venv/bin/python" -c 'import cloudpickle, grpc, google.protobuf as p; print("cloudpickle", cloudpickle.__version__, "grpcio", grpc.__version__, "protobuf", p.__version__)')"
ATOLL_RUNTIME_LOCK=$PWD/.latest/runtime.txt make test-python PYTHON="$venv/bin/python"
