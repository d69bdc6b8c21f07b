#!/usr/bin/env bash
# Builds the Kubernetes binaries the test cluster needs (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kubectl) from the Go module
# proxy, into a cache outside the repository keyed by version, so that a second
# run finds them and returns at once. Prints the binaries' directory.
#
# Why a scratch module: k8s.io/kubernetes replaces its k8s.io/* staging modules
# with ./staging paths, which a consumer cannot follow; pinning each of them to
# the matching v0.x.y release makes the main module buildable. The checksum
# database does not know these pseudo-consumers' combinations, hence GOSUMDB=off
# for this module only (the proxy still serves the code over TLS).
set -euo pipefail

KUBE_VERSION="${ATOLL_KUBE_VERSION:-v1.32.4}"
CACHE="${ATOLL_KUBE_CACHE:-/var/cache/atoll-kube}"
OUT="$CACHE/$KUBE_VERSION/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$OUT/$b" ]] || return 1; done
}

if have_all; then
  echo "$OUT"
  exit 0
fi

staging_version="v0.${KUBE_VERSION#v1.}"
mod="$CACHE/$KUBE_VERSION/module"
mkdir -p "$mod" "$OUT"
staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
  cloud-provider cluster-bootstrap code-generator component-base component-helpers
  controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
  endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
  kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
  sample-apiserver sample-cli-plugin sample-controller)
{
  echo "module atoll.local/kubebuild"
  echo
  echo "go 1.23"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  for s in "${staging[@]}"; do echo "	k8s.io/$s => k8s.io/$s $staging_version"; done
  echo ")"
} >"$mod/go.mod"
cat >"$mod/tools.go" <<'GO'
//go:build tools

// Package kubebuild only pins the Kubernetes commands this module builds.
package kubebuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO

export GOSUMDB=off GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
export GOCACHE="$CACHE/gocache"
cd "$mod"
go mod tidy >&2
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION \
-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
tmp="$OUT.tmp"
rm -rf "$tmp"; mkdir -p "$tmp"
pkgs=()
for b in "${BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
go build -p "${ATOLL_KUBE_BUILD_JOBS:-2}" -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}" >&2
mv "$tmp"/* "$OUT/"
rmdir "$tmp"
echo "$OUT"
