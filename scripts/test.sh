#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: Go packages, then the Python
# end-to-end suite against real atoll server processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make test
# The same calls through pods on a real single-node cluster, brought up and
# down around the suite (scripts/kube-up.sh: it needs root).
if [[ $(id -u) -eq 0 ]]; then
	make test-kube
elif [[ "${CI:-}" == true ]]; then
	echo "test: the Kubernetes suite needs root" >&2
	exit 1
else
	echo "test: the Kubernetes suite needs root; run it with: sudo make test-kube" >&2
fi
