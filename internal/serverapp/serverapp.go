// Package serverapp assembles `atoll server` from its parts, in named
// start-up steps (Run reads as the list of them): the data directory, the
// state store and run history, the environment builder, the machine catalog
// and capacity, the worker launcher, the scheduler, the gRPC services of
// internal/server behind internal/auth's interceptors, the listener, and,
// when asked for, the metrics and the dashboard (internal/metrics,
// internal/dashboard) on a port of their own.
//
// It owns the order things start and stop in and nothing else: no flag
// parsing or exiting (cmd/atoll does that), and no logic of the parts.
package serverapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"

	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/dashboard"
	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/fastcall"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/metrics"
	"github.com/atoll-dev/atoll/internal/sandbox"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/secrets"
	"github.com/atoll-dev/atoll/internal/server"
	"github.com/atoll-dev/atoll/internal/state"
	"github.com/atoll-dev/atoll/internal/storage"
	"github.com/atoll-dev/atoll/python"
)

// DefaultListen is the server's address unless told otherwise: loopback only.
const DefaultListen = "127.0.0.1:28655"

// Keepalive: the server pings a connection idle for KeepaliveTime and
// drops it when no answer comes within KeepaliveTimeout, so a caller that
// vanished (its host gone, or stopped) does not hold its calls' workers.
// Callers ping too (the SDK every 10 s, see python/atoll/_channel.py);
// KeepaliveMinClientInterval is the most often they may, below which gRPC
// would drop them for pinging too much.
const (
	KeepaliveTime              = 30 * time.Second
	KeepaliveTimeout           = 10 * time.Second
	KeepaliveMinClientInterval = 5 * time.Second
)

// DefaultShutdownGrace is how long a stopping server lets calls in flight
// finish.
const DefaultShutdownGrace = 30 * time.Second

// cutCallsGrace is how long, after the grace period, the calls whose
// workers were killed have to tell their callers so, before the
// connections close.
const cutCallsGrace = 5 * time.Second

// Files under the data directory.
const (
	StateFile = "state.db"
	PIDFile   = "server.pid"
)

// Config is what `atoll server` was asked to run with.
type Config struct {
	Listen   string
	DataDir  string
	Insecure bool
	TLSCert  string
	TLSKey   string
	// Sandbox is auto, runc, crun, runsc or process; Network isolated,
	// host or none.
	Sandbox string
	Network string
	// WorkerTransport is sandbox.TransportPipes or TransportConnect
	// (workers dial back to a loopback listener, as cluster workers do).
	WorkerTransport string
	// MachinesFile, if set, amends machine types, GPUs and capacity.
	MachinesFile string
	QueueTimeout time.Duration
	// EnvMaxBytes, WheelsOnly, UV and AllowLocalRequirements configure the
	// environment builder; RuntimeLock is what workers' runtimes are built
	// from.
	EnvMaxBytes            int64
	WheelsOnly             bool
	UV                     string
	AllowLocalRequirements bool
	RuntimeLock            []byte
	// DataQuota is each account's /data quota in bytes (storage.NoQuota: none).
	DataQuota    int64
	RunRetention time.Duration
	// ShutdownGrace is how long calls in flight may go on once the server
	// is told to stop (0: DefaultShutdownGrace); their workers are killed
	// after it.
	ShutdownGrace time.Duration
	// MaxCallTimeout bounds every call's timeout= (0: server.DefaultMaxTimeout).
	MaxCallTimeout time.Duration
	// Version is reported by the Admin service.
	Version string
	Logger  *slog.Logger
	// NetworkStack is the user-mode network stack of isolated workers
	// (sandbox.StackSlirp4netns or StackPasta); NetworkDeny the IPv4
	// prefixes they cannot reach besides those always denied.
	NetworkStack string
	NetworkDeny  []netip.Prefix
	// DataVolumes is how accounts' /data is kept: storage.VolumesAuto,
	// VolumesLoop (a filesystem image each, the quota its size) or
	// VolumesDirectory (the quota binds sync_dir only).
	DataVolumes string
	// Edge bounds the API's connections and messages; zero fields take
	// internal/server's defaults.
	// Launcher is LauncherLocal ("" too) or LauncherKubernetes, which Kube
	// configures.
	Launcher string
	Kube     KubeConfig
	Edge     EdgeConfig
	// Dashboard, if set, is the address the dashboard and /metrics are
	// served on; DashboardAdmins are the accounts whose keys see every
	// account there; MetricsTokenFile, if set, holds the bearer token
	// /metrics asks for.
	Dashboard        string
	DashboardAdmins  []string
	MetricsTokenFile string
}

// EdgeConfig bounds what callers may hold of the server (docs/limits.md).
type EdgeConfig struct {
	// MaxMessageBytes is the payload limit for authenticated callers.
	MaxMessageBytes int
	// HandshakeTimeout bounds a new connection's TLS and HTTP/2 handshakes.
	HandshakeTimeout time.Duration
	// IdleTimeout closes connections with no call in flight.
	IdleTimeout time.Duration
	// MaxUnauthenticatedConns is how many connections that have not
	// authenticated are held at once (the oldest goes for a new one).
	MaxUnauthenticatedConns int
}

// BuilderOptions configures the environment builder as the server does, so
// that `atoll envs` finds and builds the same environments.
func BuilderOptions(dataDir string, runtimeLock []byte, log *slog.Logger) envbuild.Options {
	return envbuild.Options{
		Root:            filepath.Join(dataDir, "envs"),
		Logger:          log,
		RuntimeLock:     runtimeLock,
		CompileBytecode: true,
		SeedPip:         true,
		Provided:        []string{"atoll"},
	}
}

// app holds the parts as the steps make them, and undoes them in reverse.
type app struct {
	cfg     Config
	log     *slog.Logger
	undo    []func()
	dataDir string
	sdkDir  string

	store    *state.Store
	authn    *auth.Authenticator
	history  *server.History
	secrets  *secrets.Vault
	builder  *envbuild.Builder
	catalog  machine.Catalog
	capacity *machine.Capacity
	// maxWorkers is each account's cap of workers, from the config file.
	maxWorkers func(account string) int
	launcher   launcher
	// workers is the scheduler's launcher: local, or kube's.
	workers        scheduler.Launcher
	kubeNested     net.Listener
	accountDataDir func(account string) (string, error)
	local          *sandbox.LocalLauncher
	sched          *scheduler.Scheduler
	lis            net.Listener
	guard          *server.ConnGuard
	gs             *grpc.Server
	memory         *memoryReleaser

	dataStore *storage.Store
	metrics   *metrics.Metrics
	live      *dashboard.Live
	// workerSockets is the directory of the workers' unix sockets, where
	// their network is not the host's (see workerapi.go).
	workerSockets string

	// functions is the Functions service; lean serves its Run on the
	// socket at leanPath (leancalls.go).
	functions *server.Functions
	lean      *fastcall.Server
	leanPath  string
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	a := &app{cfg: cfg, log: cfg.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	defer a.close()
	for _, step := range []func(context.Context) error{
		a.checkConfig,
		a.lockDataDir,
		a.openDataDir,
		a.openState,
		a.openMetrics,
		a.startHistory,
		a.openSecrets,
		a.loadMachines,
		a.startLauncher,
		a.openEnvironments, // builds run in the sandbox startLauncher proved
		a.startLocalLauncher,
		a.startKubeLauncher,
		a.startScheduler,
		a.listen,
		a.startMemoryReleaser,
		a.registerServices,
		a.startDashboard,
		a.serveWorkerAPI,
		a.serveKubeNested,
		a.writePIDFile,
		a.serveLeanCalls,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return a.serve(ctx)
}

func (a *app) close() {
	for i := len(a.undo) - 1; i >= 0; i-- {
		a.undo[i]()
	}
}

func (a *app) checkConfig(context.Context) error {
	switch a.cfg.Launcher {
	case "", LauncherLocal, LauncherKubernetes:
	default:
		return fmt.Errorf("--launcher %q: want %s or %s", a.cfg.Launcher, LauncherLocal, LauncherKubernetes)
	}
	if (a.cfg.TLSCert == "") != (a.cfg.TLSKey == "") {
		return fmt.Errorf("--tls-cert and --tls-key go together")
	}
	return CheckListen(a.cfg.Listen, a.cfg.Insecure || a.cfg.TLSCert != "")
}

// CheckListen refuses addresses other machines can reach unless the
// operator said so: without TLS, keys would cross the network in clear.
func CheckListen(addr string, insecure bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	if insecure {
		return nil
	}
	return fmt.Errorf("refusing to listen on %s without TLS: other machines could reach it; "+
		"use a loopback address such as %s, or pass --insecure", addr, DefaultListen)
}

// openDataDir makes the data directory and writes the SDK workers get.
func (a *app) openDataDir(context.Context) error {
	dataDir, err := filepath.Abs(a.cfg.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	a.dataDir = dataDir
	a.sdkDir, err = python.WriteSDK(filepath.Join(dataDir, "runtime"))
	return err
}

// openState opens keys, runs and logs, and marks the runs the last stop
// cut short.
func (a *app) openState(ctx context.Context) error {
	store, err := state.Open(ctx, filepath.Join(a.dataDir, StateFile), state.WithLogger(a.log.With("component", "state")))
	if err != nil {
		return err
	}
	a.store = store
	a.undo = append(a.undo, func() { store.Close() })
	n, err := store.InterruptUnfinishedRuns(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		a.log.Info("marked runs cut short by the last stop as interrupted", "runs", n)
	}
	a.authn = auth.New(store, auth.WithLogger(a.log.With("component", "auth")))
	return nil
}

// openSecrets opens the accounts' secrets, sealed in the state database
// with a key kept beside it, in its own 0600 file.
func (a *app) openSecrets(context.Context) error {
	v, err := secrets.Open(a.store, filepath.Join(a.dataDir, secrets.KeyFile))
	if err != nil {
		return err
	}
	a.secrets = v
	return nil
}

// startHistory starts the writer of run history, which outlives ctx long
// enough to write what the last calls left.
func (a *app) startHistory(ctx context.Context) error {
	a.history = server.NewHistory(a.store, a.cfg.RunRetention, a.log.With("component", "history"), a.historyOptions()...)
	historyCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { a.history.Run(historyCtx); close(done) }()
	a.undo = append(a.undo, func() { stop(); <-done })
	return nil
}

func (a *app) openEnvironments(ctx context.Context) error {
	opts := BuilderOptions(a.dataDir, a.cfg.RuntimeLock, a.log.With("component", "envbuild"))
	opts.MaxTotalBytes = a.cfg.EnvMaxBytes
	opts.NoBuild = a.cfg.WheelsOnly
	opts.UV = a.cfg.UV
	opts.AllowLocalRequirements = a.cfg.AllowLocalRequirements
	if a.metrics != nil {
		opts.OnBuild = a.metrics.OnBuild
	}
	if err := a.openBuildSandbox(ctx, &opts); err != nil {
		return err
	}
	builder, err := envbuild.New(opts)
	if err != nil {
		return err
	}
	a.builder = builder
	a.undo = append(a.undo, func() { builder.Close() })
	return nil
}

// loadMachines reads the machine catalog and the host's capacity: the
// specification's defaults and the detected host, as the config file (if
// any) amends them.
func (a *app) loadMachines(ctx context.Context) error {
	var cfg machine.Config
	if a.cfg.MachinesFile != "" {
		var err error
		if cfg, err = machine.LoadConfig(a.cfg.MachinesFile); err != nil {
			return err
		}
	}
	host, err := machine.DetectHost(ctx)
	switch {
	case errors.Is(err, machine.ErrGPUDetection) && len(cfg.GPUs) > 0:
		// The config's GPUs replace what detection would have found.
		a.log.Info("GPU detection failed; using the GPUs the config declares", "config", a.cfg.MachinesFile, "err", err)
	case errors.Is(err, machine.ErrGPUDetection):
		// A broken driver must not keep the CPU machine types from serving.
		a.log.Warn("GPU detection failed; serving with no GPUs (declare them under gpus: in --config to use them)", "err", err)
		host.GPUs = nil
	case err != nil:
		return fmt.Errorf("detect host: %w", err)
	}
	a.catalog, a.capacity = cfg.Catalog(), machine.NewCapacity(cfg.Host(host))
	a.maxWorkers = cfg.MaxWorkers
	return nil
}

func (a *app) startScheduler(context.Context) error {
	opts := scheduler.Options{
		Launcher:     a.workers,
		Tokens:       a.authn,
		Capacity:     a.capacity,
		QueueTimeout: a.cfg.QueueTimeout,
		StartTimeout: a.startTimeout(),
		MaxWorkers:   a.maxWorkers,
		Logger:       a.log.With("component", "scheduler"),
	}
	if a.cfg.Launcher != LauncherKubernetes {
		// Local workers start on this machine's CPUs (a pod starts on a
		// node): one start per CPU at a time makes the first ready soonest.
		opts.ParallelStarts = runtime.NumCPU()
	}
	if a.metrics != nil {
		opts.Observer = a.metrics
	}
	a.sched = scheduler.New(opts)
	return nil
}

func (a *app) listen(context.Context) error {
	lis, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	a.guard = server.NewConnGuard(server.ConnGuardOptions{
		MaxUnauthenticated: a.cfg.Edge.MaxUnauthenticatedConns,
		Logger:             a.log.With("component", "edge"),
	})
	a.lis = a.guard.Listener(lis)
	return nil
}

// registerServices makes the gRPC server: every service of internal/server,
// each call authenticated from its headers before its message is read
// (health checks excepted), and held to the bounds of docs/limits.md.
func (a *app) registerServices(context.Context) error {
	edge := a.cfg.Edge
	if edge.MaxMessageBytes <= 0 {
		edge.MaxMessageBytes = server.DefaultMaxMessageBytes
	}
	if edge.HandshakeTimeout <= 0 {
		edge.HandshakeTimeout = server.DefaultHandshakeTimeout
	}
	if edge.IdleTimeout <= 0 {
		edge.IdleTimeout = server.DefaultIdleTimeout
	}
	authOpts := []auth.InterceptorOption{
		auth.SkipMethods(healthpb.Health_Check_FullMethodName, healthpb.Health_Watch_FullMethodName),
		auth.WorkerTokenScope("/" + atollv1.Functions_ServiceDesc.ServiceName + "/"),
		auth.OnAuthenticated(a.guard.Trust),
	}
	codec := server.RequestCodec()
	validateUnary, validateStream := codec.ValidateRequests()
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(edge.MaxMessageBytes),
		grpc.MaxSendMsgSize(edge.MaxMessageBytes),
		grpc.MaxHeaderListSize(server.DefaultMaxMetadataBytes),
		grpc.ConnectionTimeout(edge.HandshakeTimeout),
		// Pings find dead or stalled peers; idle connections are closed.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time: KeepaliveTime, Timeout: KeepaliveTimeout, MaxConnectionIdle: edge.IdleTimeout,
		}),
		grpc.InTapHandle(a.authn.TapHandle(authOpts...)),
		grpc.ForceServerCodecV2(codec),
		// Larger flow-control windows: uploads (sync_dir, large arguments)
		// are not held to a round trip per 64 KiB.
		grpc.InitialWindowSize(16 << 20),
		grpc.InitialConnWindowSize(16 << 20),
		grpc.NumStreamWorkers(uint32(runtime.NumCPU())),
		grpc.StatsHandler(a.memory),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: KeepaliveMinClientInterval, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(validateUnary, a.authn.UnaryServerInterceptor(authOpts...)),
		grpc.ChainStreamInterceptor(validateStream, a.authn.StreamServerInterceptor(authOpts...)),
	}
	if a.cfg.TLSCert != "" {
		creds, err := credentials.NewServerTLSFromFile(a.cfg.TLSCert, a.cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		opts = append(opts, grpc.Creds(localSocketCreds{creds}))
	}
	opts = append(opts, a.leanCallOptions()...)
	a.gs = grpc.NewServer(opts...)
	accountDataDir, err := a.registerStorage()
	if err != nil {
		return err
	}
	if a.local != nil {
		a.local.SetServerAddr(workerHost(a.lis.Addr()))
		a.local.SetDataDirs(accountDataDir)
	}
	a.accountDataDir = accountDataDir
	running := server.NewRunning()
	a.functions = server.NewFunctions(server.Options{
		Catalog:      a.catalog,
		Capacity:     a.capacity,
		Environments: server.BuiltEnvironments{Builder: a.builder},
		Scheduler:    a.sched,
		History:      a.history,
		Secrets:      a.secrets,
		MaxTimeout:   a.cfg.MaxCallTimeout,
		Running:      running,
		Logger:       a.log.With("component", "server"),
	})
	a.functions.Register(a.gs)
	server.NewAdmin(server.AdminOptions{
		Version: a.cfg.Version, Sandbox: a.launcher.Kind, SandboxWarning: a.launcher.Warning,
		Scheduler: a.sched, Catalog: a.catalog, Capacity: a.capacity, Store: a.store,
		Running: running, Secrets: a.secrets,
		Logger: a.log.With("component", "admin"),
	}).Register(a.gs)
	healthpb.RegisterHealthServer(a.gs, health.NewServer())
	return nil
}

// workerHost is the address workers reach the server at for nested calls:
// the listening address, or loopback when it listens on every address.
func workerHost(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return addr.String()
	}
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(tcp.Port))
}

// writePIDFile records the running server's pid and address, for `atoll
// server stop` and `status` and for SDKs looking for a local server.
func (a *app) writePIDFile(context.Context) error {
	path := filepath.Join(a.dataDir, PIDFile)
	content := fmt.Sprintf("%d\n%s\n", os.Getpid(), a.lis.Addr().String())
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	a.undo = append(a.undo, func() { os.Remove(path) })
	return nil
}

// serve answers calls until ctx ends, then shuts down gracefully: no new
// calls are accepted, the calls in flight finish within the grace period,
// and then the workers of those still running are killed (their callers
// told the server is shutting down, not that a worker crashed).
func (a *app) serve(ctx context.Context) error {
	serveErr := make(chan error, 1)
	go func() { serveErr <- a.gs.Serve(a.lis) }()
	a.log.Info("atoll server listening", "addr", a.lis.Addr().String(), "data_dir", a.dataDir, "sandbox", a.launcher.Kind,
		"capacity", a.capacity.Host().String(), "tls", a.cfg.TLSCert != "")
	var err error
	select {
	case err = <-serveErr:
	case <-ctx.Done():
	}
	grace := a.cfg.ShutdownGrace
	if grace <= 0 {
		grace = DefaultShutdownGrace
	}
	a.log.Info("shutting down: accepting no new calls; calls in flight may finish", "grace", grace)
	stopped := make(chan struct{})
	go func() { a.gs.GracefulStop(); a.drainLeanCalls(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(grace):
		a.log.Warn("shutdown grace period over: killing the workers of calls still running", "grace", grace)
		a.stopWorkers()
		select {
		case <-stopped:
		case <-time.After(cutCallsGrace):
			a.gs.Stop()
		}
	}
	a.stopWorkers()
	return err
}

// stopWorkers tears every worker down and waits, a while, for them to end.
func (a *app) stopWorkers() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.sched.Shutdown(ctx); err != nil {
		a.log.Warn("workers did not all end in time", "err", err)
	}
}
