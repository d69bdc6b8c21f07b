package kube

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// Environments is what the launcher needs of the environment builder: the
// venv of a spec, built on the server for the worker image's interpreter, and
// the runner's own packages.
type Environments interface {
	Ensure(ctx context.Context, spec envbuild.Spec, logf func(string)) (envbuild.Env, error)
	Runtime(ctx context.Context, python string, logf func(string)) (string, error)
}

// DataClaims gives a worker that asks for /data its account's
// PersistentVolumeClaim.
type DataClaims interface {
	Claim(ctx context.Context, account string) (string, error)
}

// Options configures New.
type Options struct {
	Client    kubernetes.Interface
	Namespace string
	// Server names this server's objects (the atoll.dev/server label), so
	// that a restart deletes what it left and nothing else. Default "atoll".
	Server string
	// Image is the worker image; PullPolicy how nodes get it (default
	// IfNotPresent; Never on a cluster without a registry).
	Image      string
	PullPolicy corev1.PullPolicy
	// Pythons are the major.minor versions the image's interpreters have.
	Pythons []string

	Environments Environments
	// SDKDir holds the atoll Python package workers run.
	SDKDir        string
	Archives      *Archives
	ArchiveServer *ArchiveServer
	// ArchiveURL is where pods fetch archives ("http://10.0.0.1:28657").
	ArchiveURL string
	// DialBack receives the workers' connections; DialAddr is the address
	// pods dial to reach it.
	DialBack *workerproto.Listener
	DialAddr string
	// NestedAddr is the server's gRPC address as pods reach it, for nested
	// calls ("" : workers make none).
	NestedAddr string
	// Types places each machine type's pods.
	Types map[string]TypeConfig
	// CacheClaim is the PersistentVolumeClaim of the node's archive cache;
	// "" gives each pod an emptyDir (every pod fetches its archives).
	CacheClaim string
	// Data gives /data volumes; nil: workers asking for /data fail.
	Data DataClaims
	// QueueTimeout bounds how long a pod may stay unschedulable before the
	// call fails with the scheduler's reason.
	QueueTimeout time.Duration
	// ServiceAccount runs the pods (its token is never mounted); "" : the
	// namespace's default.
	ServiceAccount string
	Logger         *slog.Logger
}

// Launcher starts one pod per worker. It implements scheduler.Launcher.
type Launcher struct {
	opts  Options
	log   *slog.Logger
	pods  corelisters.PodLister
	nodes corelisters.NodeLister // nil when the server may not read nodes
	stop  context.CancelFunc

	mu    sync.Mutex
	procs map[string]*podProcess // by pod name
}

var _ scheduler.Launcher = (*Launcher)(nil)

// New checks opts, starts the informers, deletes the pods and secrets a
// previous run of this server left (their workers' tokens died with it), and
// creates the workers' NetworkPolicy. Close stops the informers.
func New(ctx context.Context, opts Options) (*Launcher, error) {
	if opts.Client == nil || opts.Namespace == "" || opts.Image == "" || opts.Environments == nil || opts.SDKDir == "" ||
		opts.Archives == nil || opts.ArchiveServer == nil || opts.ArchiveURL == "" || opts.DialBack == nil || opts.DialAddr == "" {
		return nil, fmt.Errorf("%w: Client, Namespace, Image, Environments, SDKDir, archives and the dial-back address are required", ErrInvalidConfig)
	}
	if opts.Server == "" {
		opts.Server = "atoll"
	}
	if !dnsLabel.MatchString(opts.Server) || len(opts.Server) > 40 {
		return nil, fmt.Errorf("%w: server name %q: want at most 40 of a-z, 0-9 and '-', a letter or digit at both ends", ErrInvalidConfig, opts.Server)
	}
	if opts.PullPolicy == "" {
		opts.PullPolicy = corev1.PullIfNotPresent
	}
	if opts.QueueTimeout == 0 {
		opts.QueueTimeout = scheduler.DefaultQueueTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Launcher{opts: opts, log: opts.Logger, procs: make(map[string]*podProcess)}
	if err := l.removeLeftovers(ctx); err != nil {
		return nil, err
	}
	if err := l.ensureNetworkPolicy(ctx); err != nil {
		return nil, err
	}
	informCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	l.stop = stop
	selector := labels.SelectorFromSet(serverLabels(opts.Server)).String()
	podFactory := informers.NewSharedInformerFactoryWithOptions(opts.Client, 0, informers.WithNamespace(opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	podInformer := podFactory.Core().V1().Pods()
	l.pods = podInformer.Lister()
	_, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { l.observe(obj, false) },
		UpdateFunc: func(_, obj any) { l.observe(obj, false) },
		DeleteFunc: func(obj any) { l.observe(obj, true) },
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("watch pods: %w", err)
	}
	podFactory.Start(informCtx.Done())
	synced := []cache.InformerSynced{podInformer.Informer().HasSynced}
	// Nodes tell which machine types can ever run; a server allowed only its
	// namespace does without (the scheduler then reports what cannot fit).
	if _, err := opts.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{Limit: 1}); err == nil {
		nodeFactory := informers.NewSharedInformerFactory(opts.Client, 0)
		nodeInformer := nodeFactory.Core().V1().Nodes()
		l.nodes = nodeInformer.Lister()
		nodeInformer.Informer() // registers it before Start
		nodeFactory.Start(informCtx.Done())
		synced = append(synced, nodeInformer.Informer().HasSynced)
	} else {
		l.log.Warn("cannot list nodes; machine types no node fits are found by the scheduler, not up front", "err", err)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		stop()
		return nil, fmt.Errorf("kubernetes informers did not sync: %w", context.Cause(ctx))
	}
	return l, nil
}

// Close stops following pods. Workers still running are the scheduler's to
// stop first.
func (l *Launcher) Close() {
	if l.stop != nil {
		l.stop()
	}
}

// removeLeftovers deletes the worker pods and secrets of this server's
// previous run.
func (l *Launcher) removeLeftovers(ctx context.Context) error {
	selector := labels.SelectorFromSet(serverLabels(l.opts.Server)).String()
	pods := l.opts.Client.CoreV1().Pods(l.opts.Namespace)
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return fmt.Errorf("list this server's pods in namespace %s: %w", l.opts.Namespace, err)
	}
	for _, p := range list.Items {
		if err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete leftover pod %s: %w", p.Name, err)
		}
	}
	if len(list.Items) > 0 {
		l.log.Info("deleted the worker pods a previous run left", "pods", len(list.Items))
	}
	secrets := l.opts.Client.CoreV1().Secrets(l.opts.Namespace)
	left, err := secrets.List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return fmt.Errorf("list this server's secrets in namespace %s: %w", l.opts.Namespace, err)
	}
	for _, s := range left.Items {
		if err := secrets.Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete leftover secret %s: %w", s.Name, err)
		}
	}
	return nil
}

func (l *Launcher) ensureNetworkPolicy(ctx context.Context) error {
	host, _, err := net.SplitHostPort(l.opts.DialAddr)
	if err != nil {
		return fmt.Errorf("%w: dial-back address %q: %w", ErrInvalidConfig, l.opts.DialAddr, err)
	}
	var ports []int
	for _, a := range []string{l.opts.DialAddr, l.opts.NestedAddr, strings.TrimPrefix(strings.TrimPrefix(l.opts.ArchiveURL, "http://"), "https://")} {
		if _, p, err := net.SplitHostPort(strings.TrimSuffix(a, "/")); err == nil {
			var n int
			fmt.Sscan(p, &n)
			ports = append(ports, n)
		}
	}
	np := networkPolicy(l.opts.Namespace, l.opts.Server, host, ports)
	policies := l.opts.Client.NetworkingV1().NetworkPolicies(l.opts.Namespace)
	if _, err := policies.Create(ctx, np, metav1.CreateOptions{}); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create the workers' NetworkPolicy: %w", err)
		}
		old, err := policies.Get(ctx, np.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("read the workers' NetworkPolicy: %w", err)
		}
		np.ResourceVersion = old.ResourceVersion
		if _, err := policies.Update(ctx, np, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update the workers' NetworkPolicy: %w", err)
		}
	}
	return nil
}

// observe hands a pod's new state to its process, if it is one of ours.
func (l *Launcher) observe(obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	l.mu.Lock()
	p := l.procs[pod.Name]
	l.mu.Unlock()
	if p != nil {
		p.update(pod, deleted)
	}
}

// Start creates the worker's secret and pod and returns once the pod is
// bound to a node. It fails wrapping envbuild.ErrPythonUnavailable for a
// Python the image lacks, machine.ErrNeverFits for a type no node can hold,
// and machine.ErrNoCapacity, with the scheduler's reason, for a pod no node
// takes within the queue timeout.
func (l *Launcher) Start(ctx context.Context, spec scheduler.WorkerSpec) (scheduler.Process, error) {
	if len(l.opts.Pythons) > 0 && !slices.Contains(l.opts.Pythons, spec.Environment.Python) {
		return nil, &envbuild.PythonUnavailableError{Requested: spec.Environment.Python, Available: l.opts.Pythons}
	}
	typeCfg := l.opts.Types[spec.Machine.Name]
	if err := l.checkFits(spec.Machine, typeCfg); err != nil {
		return nil, err
	}
	ps, err := l.prepare(ctx, spec, typeCfg)
	if err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	digests := []string{ps.EnvDigest, ps.Runtime, ps.SDK}
	credential, revoke := l.opts.ArchiveServer.Grant(digests)
	token := spec.Token
	if token == "" {
		token = credential + "-worker" // a worker without nested calls still needs a dial-back token
	}
	p := &podProcess{l: l, name: ps.Name, image: ps.Image, changed: make(chan struct{}), revoke: revoke, secret: ps.SecretName,
		spec: ps, token: token, credential: credential}
	p.expected = l.opts.DialBack.Expect(token)
	l.mu.Lock()
	l.procs[ps.Name] = p
	l.mu.Unlock()
	if err := l.create(ctx, ps, token, credential); err != nil {
		p.release()
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	if err := p.awaitScheduled(ctx, spec.Machine); err != nil {
		_ = p.Kill()
		go func() { _, _ = p.Wait() }()
		return nil, err
	}
	return p, nil
}

// prepare packs (once per key) what the pod unpacks, and names the claims
// it mounts.
func (l *Launcher) prepare(ctx context.Context, spec scheduler.WorkerSpec, typeCfg TypeConfig) (podSpec, error) {
	env, err := l.opts.Environments.Ensure(ctx, envbuild.Spec{Python: spec.Environment.Python, Requirements: spec.Environment.Requirements}, nil)
	if err != nil {
		return podSpec{}, err
	}
	runtimeDir, err := l.opts.Environments.Runtime(ctx, spec.Environment.Python, nil)
	if err != nil {
		return podSpec{}, fmt.Errorf("the worker runtime: %w", err)
	}
	envDigest, err := l.opts.Archives.Pack("env:"+env.Key, env.Dir, &venvRewrite{python: spec.Environment.Python})
	if err != nil {
		return podSpec{}, err
	}
	rtDigest, err := l.opts.Archives.Pack("runtime:"+runtimeDir, runtimeDir, nil)
	if err != nil {
		return podSpec{}, err
	}
	sdkDigest, err := l.opts.Archives.Pack("sdk:"+l.opts.SDKDir, l.opts.SDKDir, nil)
	if err != nil {
		return podSpec{}, err
	}
	ps := podSpec{
		Name: podName(spec.ID), Namespace: l.opts.Namespace, Server: l.opts.Server, Image: l.opts.Image,
		Worker: spec, Type: typeCfg, DialAddr: l.opts.DialAddr, NestedAddr: l.opts.NestedAddr,
		ArchiveURL: l.opts.ArchiveURL, EnvDigest: envDigest, Runtime: rtDigest, SDK: sdkDigest,
		CacheClaim: l.opts.CacheClaim, SecretName: podName(spec.ID), PullPolicy: l.opts.PullPolicy,
		ServiceAcct: l.opts.ServiceAccount,
	}
	if spec.Data {
		if l.opts.Data == nil {
			return podSpec{}, fmt.Errorf("%w: this server gives workers no /data volume", ErrInvalidConfig)
		}
		if ps.DataClaim, err = l.opts.Data.Claim(ctx, spec.Account); err != nil {
			return podSpec{}, fmt.Errorf("the /data volume of account %s: %w", spec.Account, err)
		}
	}
	return ps, nil
}

// create makes the secret, then the pod. The secret is not changed once a
// pod refers to it (making the pod its owner did: some pods then started
// with its files missing); the launcher deletes it with the worker, and a
// restarted server deletes what its last run left.
func (l *Launcher) create(ctx context.Context, ps podSpec, token, credential string) error {
	secrets := l.opts.Client.CoreV1().Secrets(ps.Namespace)
	if _, err := secrets.Create(ctx, ps.secret(token, credential), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create the worker's secret: %w", err)
	}
	// A new namespace refuses pods until its default ServiceAccount exists.
	var pod *corev1.Pod
	var err error
	for attempt := 0; ; attempt++ {
		pod, err = l.opts.Client.CoreV1().Pods(ps.Namespace).Create(ctx, ps.pod(), metav1.CreateOptions{})
		if err == nil || attempt >= 50 || !isMissingServiceAccount(err) {
			break
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(100 * time.Millisecond):
			continue
		}
		break
	}
	if err != nil {
		_ = secrets.Delete(context.WithoutCancel(ctx), ps.SecretName, metav1.DeleteOptions{})
		return fmt.Errorf("create the worker's pod: %w", err)
	}
	l.log.Debug("worker pod created", "pod", pod.Name)
	return nil
}

func isMissingServiceAccount(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "serviceaccount")
}

// checkFits fails wrapping machine.ErrNeverFits when no node could ever
// take a pod of type t.
func (l *Launcher) checkFits(t machine.Type, typeCfg TypeConfig) error {
	if l.nodes == nil {
		return nil
	}
	nodes, err := l.nodes.List(labels.SelectorFromSet(typeCfg.NodeSelector))
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	want := resources(t, typeCfg).Requests
	var largest []string
	for _, n := range nodes {
		fits := true
		for name, q := range want {
			have, ok := n.Status.Allocatable[name]
			if !ok || have.Cmp(q) < 0 {
				fits = false
			}
		}
		if fits {
			return nil
		}
		cpu, mem := n.Status.Allocatable[corev1.ResourceCPU], n.Status.Allocatable[corev1.ResourceMemory]
		largest = append(largest, fmt.Sprintf("%s: %s CPU, %s", n.Name, cpu.String(), formatQuantity(mem)))
	}
	where := "no node matches its node selector"
	if len(nodes) > 0 {
		where = "the nodes have " + strings.Join(largest, "; ")
	}
	return fmt.Errorf("%w: machine type %s needs %s on one node; %s", machine.ErrNeverFits, t.Name, describe(want), where)
}

func describe(list corev1.ResourceList) string {
	var parts []string
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		q := list[name]
		parts = append(parts, fmt.Sprintf("%s %s", formatQuantity(q), name))
	}
	for name, q := range list {
		if name != corev1.ResourceCPU && name != corev1.ResourceMemory {
			parts = append(parts, fmt.Sprintf("%s %s", q.String(), name))
		}
	}
	return strings.Join(parts, ", ")
}

// formatQuantity writes memory as people read it.
func formatQuantity(q resource.Quantity) string {
	if q.Format == resource.BinarySI || q.Value() > 1<<20 {
		return machine.FormatBytes(q.Value())
	}
	return q.String()
}

func ptr[T any](v T) *T { return &v }

// ClusterHost is the cluster as one host for the scheduler's capacity: the
// sum of what its nodes can allocate to pods. The Kubernetes scheduler still
// places each pod; this only keeps the server from queueing more pods than
// the cluster could ever run at once.
func ClusterHost(ctx context.Context, client kubernetes.Interface) (machine.Host, error) {
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return machine.Host{}, fmt.Errorf("list nodes: %w", err)
	}
	var h machine.Host
	for _, n := range nodes.Items {
		cpu, mem := n.Status.Allocatable[corev1.ResourceCPU], n.Status.Allocatable[corev1.ResourceMemory]
		h.CPUs += float64(cpu.MilliValue()) / 1000
		h.MemoryBytes += mem.Value()
	}
	return h, nil
}
