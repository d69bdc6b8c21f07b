#!/usr/bin/env bash
# Installs what atoll needs to build, run and test on a fresh Debian/Ubuntu
# machine: Debian packages (as root), the Python SDK with its test extras
# and uv (locked in python/requirements.lock), and the Go modules. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# mmdebstrap and umoci build the server's container image (scripts/build-image.sh).
# runsc is gVisor, the stronger sandbox (--sandbox runsc; the attack suite runs under it).
APT_PACKAGES=(runc crun openssl mmdebstrap umoci passt slirp4netns runsc)
# chromium and its chromedriver run the dashboard's browser test (python/tests/test_dashboard.py).
APT_PACKAGES+=(chromium chromium-driver)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
	command -v "$pkg" >/dev/null 2>&1 || dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
		echo "setup: installing ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	else
		echo "setup: ${missing[*]} not installed (needs root and apt-get); workers fall back to plain processes" >&2
	fi
fi

# Exact, hashed versions from the lock (scripts/lock.sh updates it), so a
# release elsewhere cannot change what the tests run on; then the SDK
# itself, editable, with the locked build backend.
pip=("$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore)
"${pip[@]}" --require-hashes -r python/requirements.lock
"${pip[@]}" --no-deps --no-build-isolation -e python
go mod download
go build -o bin/atoll ./cmd/atoll
go build -o bin/atoll-agent ./cmd/atoll-agent
echo "setup: done (bin/atoll and bin/atoll-agent built)"
