#!/usr/bin/env bash
# Starts a real single-node Kubernetes on this machine for atoll's
# Kubernetes launcher and its tests: etcd (Debian's etcd-server, unpacked),
# kube-apiserver, kube-scheduler, kube-controller-manager and a kubelet
# (built from the Go module proxy by scripts/kube-build.sh, cached outside
# the repository), over Debian's containerd, runc and CNI bridge plugin.
# No registry exists: the pause and worker images are built here and
# imported (scripts/kube-image.sh).
#
# Everything listens on loopback; pods sit on a private bridge (atoll-cni0,
# 10.88.77.0/24) with no masquerading, so they reach nothing but the host's
# bridge address, which atoll's server listens on for workers dialing back.
#
# Idempotent: a cluster already up is left alone; a second start from built
# binaries takes seconds. The last line printed is `export KUBECONFIG=...`.
# scripts/kube-down.sh stops it and restores what the kubelet changed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/kube-env.sh
source "$here/kube-env.sh"

log() { echo "kube-up: $*" >&2; }

install_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
  fi
}

# etcd: Debian's etcd-server, unpacked so that its init scripts never run.
install_etcd() {
  [[ -x "$KUBE_CACHE/etcd/usr/bin/etcd" ]] && return
  log "unpacking Debian's etcd-server"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download etcd-server >&2)
  mkdir -p "$KUBE_CACHE/etcd"
  dpkg-deb -x "$tmp"/etcd-server_*.deb "$KUBE_CACHE/etcd"
  rm -rf "$tmp"
}

running() { [[ -f "$KUBE_RUN/$1.pid" ]] && kill -0 "$(cat "$KUBE_RUN/$1.pid")" 2>/dev/null; }

# start NAME CMD...: runs CMD in the background, its own session, logging
# to the state directory.
start() {
  local name="$1"
  shift
  running "$name" && return
  mkdir -p "$KUBE_STATE/log"
  # etcd reads every ETCD_* variable as a flag: give each its own clean
  # environment.
  env -i PATH="$PATH" HOME=/root setsid "$@" >>"$KUBE_STATE/log/$name.log" 2>&1 </dev/null &
  echo $! >"$KUBE_RUN/$name.pid"
}

wait_for() {
  local what="$1" tries="$2"
  shift 2
  for ((i = 0; i < tries; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "$what did not come up; its log:"
  tail -n 30 "$KUBE_STATE/log/$what.log" >&2 || true
  return 1
}

make_certs() {
  local pki="$KUBE_STATE/pki"
  [[ -f "$pki/admin.token" ]] && return
  mkdir -p "$pki"
  chmod 700 "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=atoll-kube-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:%s,IP:%s,DNS:kubernetes.default.svc\n' \
    "$KUBE_SERVICE_IP" "$KUBE_BRIDGE_IP" >"$pki/apiserver.ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  local admin kubelet
  admin="$(openssl rand -hex 24)"
  kubelet="$(openssl rand -hex 24)"
  # Static tokens: the components and the admin are system:masters (a test
  # cluster on one machine; nothing else can reach its loopback port).
  {
    echo "$admin,admin,admin,system:masters"
    echo "$kubelet,system:node:localhost,kubelet,system:masters"
  } >"$pki/tokens.csv"
  echo "$kubelet" >"$pki/kubelet.token"
  echo "$admin" >"$pki/admin.token"
}

kubeconfig() {
  local token="$1" out="$2"
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: atoll
  cluster:
    server: https://127.0.0.1:$KUBE_API_PORT
    certificate-authority-data: $(base64 -w0 <"$KUBE_STATE/pki/ca.crt")
users:
- name: atoll
  user:
    token: $token
contexts:
- name: atoll
  context: {cluster: atoll, user: atoll}
current-context: atoll
EOF
  chmod 600 "$out"
}

write_configs() {
  mkdir -p "$KUBE_STATE/cni" "$KUBE_STATE/containerd"
  kubeconfig "$(cat "$KUBE_STATE/pki/admin.token")" "$KUBECONFIG_FILE"
  kubeconfig "$(cat "$KUBE_STATE/pki/kubelet.token")" "$KUBE_STATE/kubelet.kubeconfig"
  cat >"$KUBE_STATE/cni/10-atoll.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "atoll",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$KUBE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$KUBE_POD_CIDR", "gateway": "$KUBE_BRIDGE_IP"}]],
        "dataDir": "$KUBE_STATE/cni-ipam"
      }
    }
  ]
}
EOF
  # restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, so runc must
  # not lower a container's OOM score below the shim's.
  cat >"$KUBE_STATE/containerd/config.toml" <<EOF
version = 2
root = "$KUBE_STATE/containerd/root"
state = "$KUBE_RUN/containerd"
[grpc]
  address = "$KUBE_CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$KUBE_PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$KUBE_STATE/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
EOF
  cat >"$KUBE_STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBE_KUBELET_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $KUBE_KUBELET_HEALTHZ_PORT
readOnlyPort: 0
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$KUBE_CONTAINERD_SOCK
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
resolvConf: /etc/resolv.conf
hairpinMode: none
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
registerNode: true
maxPods: 50
EOF
}

save_sysctls() {
  [[ -f "$KUBE_STATE/sysctls.saved" ]] && return
  local k
  for k in "${KUBE_SYSCTLS[@]}"; do
    echo "$k=$(sysctl -n "$k")"
  done >"$KUBE_STATE/sysctls.saved"
}

# The bridge exists before the first pod, so that the server can listen on
# its address for workers dialing back; the CNI bridge plugin adopts it.
# Its MAC address is set: a bridge left to pick its own takes the lowest of
# its ports', so it changes as pods come and go, and a pod whose ARP cache
# still holds the old one loses every packet to the server until the entry
# expires (a nested call's connect times out).
make_bridge() {
  ip link show "$KUBE_BRIDGE" >/dev/null 2>&1 || ip link add "$KUBE_BRIDGE" type bridge
  ip link set "$KUBE_BRIDGE" address "$KUBE_BRIDGE_MAC"
  ip -4 addr show dev "$KUBE_BRIDGE" | grep -qF " $KUBE_BRIDGE_IP/" ||
    ip addr add "$KUBE_BRIDGE_IP/${KUBE_POD_CIDR#*/}" dev "$KUBE_BRIDGE"
  ip link set "$KUBE_BRIDGE" up
}

start_cluster() {
  local bin="$1" pki="$KUBE_STATE/pki"
  start etcd "$KUBE_CACHE/etcd/usr/bin/etcd" --name atoll --data-dir "$KUBE_STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$KUBE_ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$KUBE_ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$KUBE_ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
    --initial-cluster "atoll=http://127.0.0.1:$KUBE_ETCD_PEER_PORT" --quota-backend-bytes 2147483648
  start containerd containerd --config "$KUBE_STATE/containerd/config.toml"
  wait_for etcd 100 curl -fsS "http://127.0.0.1:$KUBE_ETCD_PORT/health"
  start kube-apiserver "$bin/kube-apiserver" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$KUBE_API_PORT" \
    --etcd-servers "http://127.0.0.1:$KUBE_ETCD_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range "$KUBE_SERVICE_CIDR" --authorization-mode RBAC \
    --endpoint-reconciler-type none --kubelet-preferred-address-types Hostname \
    --enable-priority-and-fairness=false --profiling=false
  wait_for kube-apiserver 300 kubectl --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz
  start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$KUBECONFIG_FILE" \
    --secure-port 0 --leader-elect=false --use-service-account-credentials=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --controllers '*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle' --profiling=false
  start kube-scheduler "$bin/kube-scheduler" --kubeconfig "$KUBECONFIG_FILE" \
    --secure-port 0 --leader-elect=false --profiling=false
  wait_for containerd 100 ctr --address "$KUBE_CONTAINERD_SOCK" version
  bash "$here/kube-image.sh" pause >&2
  start kubelet "$bin/kubelet" --config "$KUBE_STATE/kubelet.yaml" --kubeconfig "$KUBE_STATE/kubelet.kubeconfig" \
    --root-dir "$KUBE_STATE/kubelet" --hostname-override localhost --cert-dir "$KUBE_STATE/kubelet-pki"
}

node_ready() {
  [[ "$(kubectl --kubeconfig "$KUBECONFIG_FILE" get node localhost -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

main() {
  mkdir -p "$KUBE_STATE" "$KUBE_RUN" "$KUBE_CACHE"
  if running kubelet && running kube-apiserver && node_ready && ip link show "$KUBE_BRIDGE" >/dev/null 2>&1; then
    log "already up"
    echo "export KUBECONFIG=$KUBECONFIG_FILE"
    return
  fi
  local t0=$SECONDS
  install_packages
  install_etcd
  local bin
  bin="$(bash "$here/kube-build.sh")"
  PATH="$bin:$PATH"
  export PATH
  make_certs
  write_configs
  save_sysctls
  make_bridge
  start_cluster "$bin"
  wait_for kubelet 300 node_ready
  # The worker image is built from the atoll binary under test, by the
  # tests (scripts/kube-image.sh worker BINARY): it changes with each build.
  log "up in $((SECONDS - t0)) s"
  echo "export KUBECONFIG=$KUBECONFIG_FILE"
}

main "$@"
