#!/usr/bin/env bash
# Builds and imports the test cluster's images (no registry exists):
#   kube-image.sh pause          the pod sandbox image, from the pause.c
#                                that ships in the k8s.io/kubernetes module
#   kube-image.sh worker BINARY  the worker image: a Debian rootfs with its
#                                python3 (built once, cached) and BINARY as
#                                /usr/local/bin/atoll; prints the image name
# Images are named fully (localhost/...) and used with imagePullPolicy Never.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/kube-env.sh
source "$here/kube-env.sh"

ctr_() { ctr --address "$KUBE_CONTAINERD_SOCK" -n k8s.io "$@"; }

have_image() { ctr_ images ls -q | grep -qxF "$1"; }

import() {
  ctr_ images import --no-unpack=false "$1" >/dev/null
}

pause_image() {
  have_image "$KUBE_PAUSE_IMAGE" && return
  local src work
  src="$(GOFLAGS=-mod=mod GOSUMDB=off go env GOMODCACHE)/k8s.io/kubernetes@$KUBE_VERSION/build/pause/linux/pause.c"
  work="$(mktemp -d)"
  mkdir -p "$work/root"
  gcc -Os -static -o "$work/root/pause" "$src"
  tar -C "$work/root" --owner=0 --group=0 -cf "$work/layer.tar" pause
  python3 "$here/oci-image.py" --name "$KUBE_PAUSE_IMAGE" --out "$work/image.tar" \
    --layer "$work/layer.tar" --entrypoint /pause --user 65535:65535
  import "$work/image.tar"
  rm -rf "$work"
}

# The worker rootfs: Debian's minimal base and python3, without apt's and
# the docs' weight. Cached by its recipe's hash.
WORKER_PACKAGES=python3
base_rootfs() {
  local key out
  key="$(echo "bookworm $WORKER_PACKAGES v1" | sha256sum | cut -c1-12)"
  out="$KUBE_CACHE/rootfs/worker-$key.tar"
  if [[ ! -f "$out" ]]; then
    mkdir -p "$KUBE_CACHE/rootfs"
    echo "kube-image: building the worker rootfs (once)" >&2
    mmdebstrap --quiet --variant=minbase --include="$WORKER_PACKAGES" --mode=root --format=tar \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      bookworm "$out.tmp" http://deb.debian.org/debian >&2
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

worker_image() {
  local binary="$1" base sum name work
  [[ -x "$binary" ]] || { echo "kube-image: $binary is not an executable atoll binary" >&2; exit 2; }
  base="$(base_rootfs)"
  sum="$(cat "$base" "$binary" | sha256sum | cut -c1-16)"
  name="localhost/atoll-worker:$sum"
  if ! have_image "$name"; then
    work="$(mktemp -d)"
    mkdir -p "$work/root/usr/local/bin"
    cp "$binary" "$work/root/usr/local/bin/atoll"
    tar -C "$work/root" --owner=0 --group=0 -cf "$work/atoll.tar" usr
    python3 "$here/oci-image.py" --name "$name" --out "$work/image.tar" \
      --layer "$base" --layer "$work/atoll.tar" --entrypoint /usr/local/bin/atoll \
      --env PATH=/usr/local/bin:/usr/bin:/bin --env PYTHONUNBUFFERED=1 --env LANG=C.UTF-8 \
      --user 65534:65534 --label "dev.atoll.pythons=$(pythons "$base")"
    import "$work/image.tar"
    rm -rf "$work"
  fi
  echo "$name"
}

# pythons lists the major.minor versions of the rootfs's interpreters.
pythons() {
  tar -tf "$1" | sed -n 's#^\./usr/bin/python\([0-9]\.[0-9]*\)$#\1#p' | sort -u | paste -sd, -
}

case "${1:-}" in
  pause) pause_image ;;
  worker) worker_image "${2:?usage: kube-image.sh worker BINARY}" ;;
  *) echo "usage: kube-image.sh pause | worker BINARY" >&2; exit 2 ;;
esac
