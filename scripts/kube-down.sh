#!/usr/bin/env bash
# Stops the cluster scripts/kube-up.sh started: its containers, the kubelet
# and the control plane (by their pid files), the mounts and network
# namespaces they left, the CNI bridge and the kubelet's cgroups, and puts
# back the sysctls the kubelet rewrote. The cluster's state (etcd, images)
# stays for a fast next start unless --purge is given; built binaries stay in
# the cache either way.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/kube-env.sh
source "$here/kube-env.sh"

stop() {
  local pidfile="$KUBE_RUN/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}

# The kubelet first, so that it restarts nothing; then every container.
stop kubelet
if [[ -S "$KUBE_CONTAINERD_SOCK" ]]; then
  ctr_() { ctr --address "$KUBE_CONTAINERD_SOCK" -n k8s.io "$@"; }
  # delete -f kills a task that still runs.
  for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$t" >/dev/null 2>&1; done
  for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1; done
fi
for c in kube-scheduler kube-controller-manager kube-apiserver containerd etcd; do stop "$c"; done
# containerd-shim processes outlive containerd: end the ones serving our
# socket's state.
for pid in $(pgrep -f "containerd-shim.*-address $KUBE_CONTAINERD_SOCK" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done

# Mounts under our directories, deepest first.
findmnt -rn -o TARGET | grep -E "^($KUBE_STATE|$KUBE_RUN)(/|$)" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
# Network namespaces the CNI plugin made for our pods.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-'); do
  # Only those holding an address of our pod range: others are not ours.
  if ip netns exec "$ns" ip -4 -o addr show 2>/dev/null | grep -qF " inet ${KUBE_POD_CIDR%.*}."; then ip netns delete "$ns" 2>/dev/null; fi
done
ip link delete "$KUBE_BRIDGE" 2>/dev/null
rm -rf "$KUBE_STATE/cni-ipam"

# The kubelet's cgroups (v1: one tree per controller; v2: one tree).
for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods.slice /sys/fs/cgroup/kubepods.slice; do
  [[ -d "$root" ]] && find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null
done

if [[ -f "$KUBE_STATE/sysctls.saved" ]]; then
  while IFS='=' read -r k v; do sysctl -qw "$k=$v" >/dev/null 2>&1; done <"$KUBE_STATE/sysctls.saved"
  rm -f "$KUBE_STATE/sysctls.saved"
fi
if [[ "${1:-}" == --purge ]]; then
  rm -rf "$KUBE_STATE" "$KUBE_RUN"
fi
echo "kube-down: stopped" >&2
