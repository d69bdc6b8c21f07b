package serverapp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/atoll-dev/atoll/internal/kube"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// Launchers `atoll server --launcher` chooses between.
const (
	LauncherLocal      = "local"
	LauncherKubernetes = "kubernetes"
)

// KubeConfig configures the Kubernetes launcher (--launcher kubernetes).
type KubeConfig struct {
	// Kubeconfig is the client configuration file; "" : in-cluster.
	Kubeconfig string
	Namespace  string
	// WorkerImage, its pull policy and the Pythons its interpreters have.
	WorkerImage      string
	WorkerPullPolicy string
	WorkerPythons    []string
	// AdvertiseAddress is HOST[:PORT], where pods reach this server: the
	// worker listener on PORT, nested calls' gRPC on PORT+1 and environment
	// archives on PORT+2 (each on a port of the system's choosing without
	// PORT).
	AdvertiseAddress string
	// ServerName labels this server's objects; default "atoll".
	ServerName string
	// LocalNode, when the server shares a node with its workers, names it:
	// /data is then each account's directory as a local volume there, and
	// NodeCacheDir (if set) is the node's archive cache.
	LocalNode    string
	NodeCacheDir string
	// DataStorageClass gives /data claims of this class (multi-node).
	DataStorageClass string
}

// startKubeLauncher starts the Kubernetes launcher in place of the local
// one, with the listeners its pods dial back to.
func (a *app) startKubeLauncher(ctx context.Context) error {
	if a.cfg.Launcher != LauncherKubernetes {
		return nil
	}
	kc := a.cfg.Kube
	if kc.WorkerImage == "" || kc.AdvertiseAddress == "" {
		return errors.New("--launcher kubernetes needs --worker-image and --advertise-address (the address pods reach this server at)")
	}
	if kc.LocalNode == "" && kc.NodeCacheDir != "" {
		return errors.New("--kube-node-cache needs --kube-local-node: the cache is a local volume on that node")
	}
	restCfg, err := kubeClientConfig(kc.Kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	host, port, err := advertised(kc.AdvertiseAddress)
	if err != nil {
		return err
	}
	log := a.log.With("component", "kube")
	workerLis, err := net.Listen("tcp", net.JoinHostPort(host, portOr0(port, 0)))
	if err != nil {
		return fmt.Errorf("listen for worker pods: %w", err)
	}
	dialBack := workerproto.NewListener(workerLis, log)
	go func() {
		if err := dialBack.Serve(); err != nil {
			log.Error("worker listener stopped", "err", err)
		}
	}()
	a.undo = append(a.undo, func() { dialBack.Close() })
	if a.kubeNested, err = net.Listen("tcp", net.JoinHostPort(host, portOr0(port, 1))); err != nil {
		return fmt.Errorf("listen for nested calls from worker pods: %w", err)
	}
	archiveLis, err := net.Listen("tcp", net.JoinHostPort(host, portOr0(port, 2)))
	if err != nil {
		return fmt.Errorf("listen for environment archive fetches: %w", err)
	}
	archives, err := kube.NewArchives(filepath.Join(a.dataDir, "kube-archives"))
	if err != nil {
		return err
	}
	archiveServer := kube.NewArchiveServer(archives)
	hs := &http.Server{Handler: archiveServer, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(archiveLis) }()
	a.undo = append(a.undo, func() { hs.Close() })

	var types map[string]kube.TypeConfig
	if a.cfg.MachinesFile != "" {
		if types, err = kube.LoadTypeConfigs(a.cfg.MachinesFile); err != nil {
			return err
		}
	}
	if kc.Namespace == "" {
		kc.Namespace = "default"
	}
	if kc.ServerName == "" {
		kc.ServerName = "atoll"
	}
	volumes := kube.LocalVolumes{Client: client, Namespace: kc.Namespace, Server: kc.ServerName, Node: kc.LocalNode}
	opts := kube.Options{
		Client: client, Namespace: kc.Namespace, Server: kc.ServerName,
		Image: kc.WorkerImage, PullPolicy: corev1.PullPolicy(kc.WorkerPullPolicy), Pythons: kc.WorkerPythons,
		Environments: a.builder, SDKDir: a.sdkDir,
		Archives: archives, ArchiveServer: archiveServer, ArchiveURL: "http://" + archiveLis.Addr().String(),
		DialBack: dialBack, DialAddr: workerLis.Addr().String(), NestedAddr: a.kubeNested.Addr().String(),
		Types: types, QueueTimeout: a.cfg.QueueTimeout, Logger: log,
	}
	if kc.NodeCacheDir != "" {
		if err := kube.PrepareCacheDir(kc.NodeCacheDir); err != nil {
			return fmt.Errorf("--kube-node-cache: %w", err)
		}
		opts.CacheClaim = kube.CacheClaimName(kc.ServerName)
		if err := volumes.Ensure(ctx, opts.CacheClaim, kc.NodeCacheDir, 0); err != nil {
			return fmt.Errorf("the node's archive cache: %w", err)
		}
	}
	switch {
	case kc.LocalNode != "":
		opts.Data = kube.LocalData{Volumes: volumes, QuotaBytes: a.cfg.DataQuota, Dir: func(account string) (string, error) {
			if a.accountDataDir == nil {
				return "", errors.New("storage is not ready")
			}
			return a.accountDataDir(account)
		}}
	case kc.DataStorageClass != "":
		opts.Data = kube.ClassData{Client: client, Namespace: kc.Namespace, Server: kc.ServerName, StorageClass: kc.DataStorageClass, QuotaBytes: a.cfg.DataQuota}
	}
	l, err := kube.New(ctx, opts)
	if err != nil {
		return fmt.Errorf("--launcher kubernetes: %w", err)
	}
	a.undo = append(a.undo, l.Close)
	a.workers = l
	cluster, err := kube.ClusterHost(ctx, client)
	if err != nil {
		log.Warn("cannot read the cluster's nodes; capacity stays this host's", "err", err)
	} else {
		var mc machine.Config
		if a.cfg.MachinesFile != "" {
			if mc, err = machine.LoadConfig(a.cfg.MachinesFile); err != nil {
				return err
			}
		}
		a.capacity = machine.NewCapacity(mc.Host(cluster))
	}
	log.Info("kubernetes launcher ready", "namespace", kc.Namespace, "image", kc.WorkerImage,
		"dial_back", opts.DialAddr, "archives", opts.ArchiveURL, "nested", opts.NestedAddr, "node_cache", opts.CacheClaim != "")
	return nil
}

// serveKubeNested serves nested calls from worker pods on their listener.
func (a *app) serveKubeNested(context.Context) error {
	if a.kubeNested == nil {
		return nil
	}
	lis := a.kubeNested
	go func() { _ = a.gs.Serve(lis) }()
	return nil
}

func kubeClientConfig(path string) (*rest.Config, error) {
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig not given and not running in a cluster: %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

// advertised splits HOST[:PORT].
func advertised(addr string) (host string, port int, err error) {
	if h, p, err := net.SplitHostPort(addr); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65533 {
			return "", 0, fmt.Errorf("--advertise-address %q: port %q: want 1 to 65533", addr, p)
		}
		return h, n, nil
	}
	if net.ParseIP(addr) == nil {
		return "", 0, fmt.Errorf("--advertise-address %q: want an IP address, with or without :PORT", addr)
	}
	return addr, 0, nil
}

func portOr0(base, offset int) string {
	if base == 0 {
		return "0"
	}
	return strconv.Itoa(base + offset)
}

// startTimeout bounds a worker's start: a pod may wait for a node up to the
// queue timeout before its image, archives and interpreter start.
func (a *app) startTimeout() time.Duration {
	if a.cfg.Launcher != LauncherKubernetes {
		return 0
	}
	q := a.cfg.QueueTimeout
	if q == 0 {
		q = scheduler.DefaultQueueTimeout
	}
	return q + scheduler.DefaultStartTimeout
}
