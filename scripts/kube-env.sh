# Shared settings of scripts/kube-up.sh, kube-down.sh and kube-image.sh
# (sourced). Override any with the environment.
KUBE_VERSION="${ATOLL_KUBE_VERSION:-v1.32.4}"
KUBE_CACHE="${ATOLL_KUBE_CACHE:-/var/cache/atoll-kube}"
KUBE_STATE="${ATOLL_KUBE_STATE:-/var/lib/atoll-kube}"
KUBE_RUN="${ATOLL_KUBE_RUN:-/run/atoll-kube}"
KUBECONFIG_FILE="$KUBE_STATE/admin.kubeconfig"
KUBE_CONTAINERD_SOCK="$KUBE_RUN/containerd.sock"
# Ports on loopback, away from the defaults another cluster would use.
KUBE_ETCD_PORT=32379
KUBE_ETCD_PEER_PORT=32380
KUBE_API_PORT=36443
KUBE_KUBELET_PORT=30250
KUBE_KUBELET_HEALTHZ_PORT=30248
KUBE_BRIDGE=atoll-cni0
KUBE_POD_CIDR=10.88.77.0/24
KUBE_BRIDGE_IP=10.88.77.1
# Locally administered (the 02 of its first byte), so no card has it.
KUBE_BRIDGE_MAC=02:a7:0c:88:77:01
KUBE_SERVICE_CIDR=10.88.78.0/24
KUBE_SERVICE_IP=10.88.78.1
KUBE_PAUSE_IMAGE=localhost/atoll-pause:3.10
# What the kubelet rewrites on the host, restored by kube-down.sh.
KUBE_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
