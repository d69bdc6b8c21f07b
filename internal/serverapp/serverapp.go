// Package serverapp assembles `atoll server` from its parts, in named
// start-up steps (Run reads as the list of them): the data directory, the
// state store and run history, the environment builder, the machine catalog
// and capacity, the worker launcher, the scheduler, the gRPC services of
// internal/server behind internal/auth's interceptors, and the listener.
//
// It owns the order things start and stop in and nothing else: no flag
// parsing or exiting (cmd/atoll does that), and no logic of the parts.
package serverapp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/sandbox"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/server"
	"github.com/atoll-dev/atoll/internal/state"
	"github.com/atoll-dev/atoll/python"
)

// DefaultListen is the server's address unless told otherwise: loopback only.
const DefaultListen = "127.0.0.1:28655"

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
	// Sandbox is auto, runc, crun, runsc or process; Network host or none.
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
	// Version is reported by the Admin service.
	Version string
	Logger  *slog.Logger
	// Launcher is LauncherLocal ("" too) or LauncherKubernetes, which Kube
	// configures.
	Launcher string
	Kube     KubeConfig
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
	builder  *envbuild.Builder
	catalog  machine.Catalog
	capacity *machine.Capacity
	launcher launcher
	local    *sandbox.LocalLauncher
	// workers is the scheduler's launcher: local, or kube's.
	workers        scheduler.Launcher
	kubeNested     net.Listener
	accountDataDir func(account string) (string, error)
	sched          *scheduler.Scheduler
	lis            net.Listener
	gs             *grpc.Server
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
		a.openDataDir,
		a.openState,
		a.startHistory,
		a.openEnvironments,
		a.loadMachines,
		a.startLauncher,
		a.startLocalLauncher,
		a.startKubeLauncher,
		a.startScheduler,
		a.listen,
		a.registerServices,
		a.serveKubeNested,
		a.writePIDFile,
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

// startHistory starts the writer of run history, which outlives ctx long
// enough to write what the last calls left.
func (a *app) startHistory(ctx context.Context) error {
	a.history = server.NewHistory(a.store, a.cfg.RunRetention, a.log.With("component", "history"))
	historyCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { a.history.Run(historyCtx); close(done) }()
	a.undo = append(a.undo, func() { stop(); <-done })
	return nil
}

func (a *app) openEnvironments(context.Context) error {
	opts := BuilderOptions(a.dataDir, a.cfg.RuntimeLock, a.log.With("component", "envbuild"))
	opts.MaxTotalBytes = a.cfg.EnvMaxBytes
	opts.NoBuild = a.cfg.WheelsOnly
	opts.UV = a.cfg.UV
	opts.AllowLocalRequirements = a.cfg.AllowLocalRequirements
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
	if err != nil {
		return fmt.Errorf("detect host: %w", err)
	}
	a.catalog, a.capacity = cfg.Catalog(), machine.NewCapacity(cfg.Host(host))
	return nil
}

func (a *app) startScheduler(context.Context) error {
	a.sched = scheduler.New(scheduler.Options{
		Launcher:     a.workers,
		Tokens:       a.authn,
		Capacity:     a.capacity,
		QueueTimeout: a.cfg.QueueTimeout,
		StartTimeout: a.startTimeout(),
		Logger:       a.log.With("component", "scheduler"),
	})
	return nil
}

func (a *app) listen(context.Context) error {
	lis, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	a.lis = lis
	return nil
}

// registerServices makes the gRPC server: every service of internal/server,
// each call authenticated from its metadata (health checks excepted).
func (a *app) registerServices(context.Context) error {
	skip := auth.SkipMethods(healthpb.Health_Check_FullMethodName, healthpb.Health_Watch_FullMethodName)
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(server.MaxMessageBytes),
		grpc.MaxSendMsgSize(server.MaxMessageBytes),
		// Larger flow-control windows: uploads (sync_dir, large arguments)
		// are not held to a round trip per 64 KiB.
		grpc.InitialWindowSize(16 << 20),
		grpc.InitialConnWindowSize(16 << 20),
		grpc.NumStreamWorkers(uint32(runtime.NumCPU())),
		grpc.ChainUnaryInterceptor(a.authn.UnaryServerInterceptor(skip)),
		grpc.ChainStreamInterceptor(a.authn.StreamServerInterceptor(skip)),
	}
	if a.cfg.TLSCert != "" {
		creds, err := credentials.NewServerTLSFromFile(a.cfg.TLSCert, a.cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		opts = append(opts, grpc.Creds(creds))
	}
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
	server.NewFunctions(server.Options{
		Catalog:      a.catalog,
		Capacity:     a.capacity,
		Environments: server.BuiltEnvironments{Builder: a.builder},
		Scheduler:    a.sched,
		History:      a.history,
		Logger:       a.log.With("component", "server"),
	}).Register(a.gs)
	server.NewAdmin(server.AdminOptions{
		Version: a.cfg.Version, Sandbox: a.launcher.Kind, SandboxWarning: a.launcher.Warning,
		Scheduler: a.sched, Catalog: a.catalog, Capacity: a.capacity, Store: a.store,
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

// serve answers calls until ctx ends, then stops the workers and lets the
// calls in flight finish for a while.
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
	a.log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = a.sched.Shutdown(shutdownCtx)
	stopped := make(chan struct{})
	go func() { a.gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		a.gs.Stop()
	}
	return err
}
