#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: Go packages, then the Python
# end-to-end suite against real atoll server processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make test
