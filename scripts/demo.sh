#!/usr/bin/env bash
# Sets up, starts a local atoll server with a key of its own, runs the
# quick-start example against it, and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
# uv, installed by pip, lives in that Python's scripts directory.
export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
data=$(mktemp -d)
port=${ATOLL_DEMO_PORT:-28656}
key=$(bin/atoll keys create --data-dir "$data" --label demo --json)
bin/atoll server --listen "127.0.0.1:$port" --data-dir "$data" 2>"$data/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
	python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
	sleep 0.1
done
export ATOLL_HOST="127.0.0.1:$port"
export ATOLL_KEY_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["key_id"])' <<<"$key")
export ATOLL_KEY_SECRET=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["key_secret"])' <<<"$key")
python3 examples/quickstart.py
