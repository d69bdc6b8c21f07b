package main

import (
	"github.com/spf13/pflag"

	"github.com/atoll-dev/atoll/internal/serverapp"
)

// addKubeFlags adds `atoll server`'s launcher choice and the Kubernetes
// launcher's settings.
func addKubeFlags(f *pflag.FlagSet, cfg *serverapp.Config) {
	k := &cfg.Kube
	f.StringVar(&cfg.Launcher, "launcher", serverapp.LauncherLocal, "where workers run: local (this host's sandbox) or kubernetes (one pod per worker)")
	f.StringVar(&k.Kubeconfig, "kubeconfig", "", "kubernetes: client configuration file (default: in-cluster configuration)")
	f.StringVar(&k.Namespace, "namespace", "default", "kubernetes: namespace of the worker pods")
	f.StringVar(&k.WorkerImage, "worker-image", "", "kubernetes: the worker image (atoll at /usr/local/bin/atoll, python3 at /usr/bin)")
	f.StringVar(&k.WorkerPullPolicy, "worker-image-pull-policy", "IfNotPresent", "kubernetes: Always, IfNotPresent or Never (a cluster without a registry)")
	f.StringSliceVar(&k.WorkerPythons, "worker-pythons", []string{"3.11"}, "kubernetes: the Python major.minor versions the worker image has")
	f.StringVar(&k.AdvertiseAddress, "advertise-address", "", "kubernetes: IP[:PORT] pods reach this server at: workers dial back to PORT, nested calls use PORT+1, archives PORT+2 (any free ports without PORT)")
	f.StringVar(&k.ServerName, "kube-server-name", "atoll", "kubernetes: labels this server's pods; a restart deletes those it left")
	f.StringVar(&k.LocalNode, "kube-local-node", "", "kubernetes: the node this server shares with its workers: /data becomes a local volume there")
	f.StringVar(&k.NodeCacheDir, "kube-node-cache", "", "kubernetes, with --kube-local-node: directory on that node caching environment archives across pods")
	f.StringVar(&k.DataStorageClass, "kube-data-storage-class", "", "kubernetes: storage class of each account's /data claim (ReadWriteMany), when the server shares no node")
}
