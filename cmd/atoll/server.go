package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/sandbox"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/server"
	"github.com/atoll-dev/atoll/internal/state"
	"github.com/atoll-dev/atoll/internal/workerproto"
	"github.com/atoll-dev/atoll/python"
)

// DefaultListen is the server's address unless told otherwise: loopback only.
const DefaultListen = "127.0.0.1:28655"

type serverOptions struct {
	listen         string
	dataDir        string
	envMaxBytes    int64
	runRetention   time.Duration
	dataQuota      string
	wheelsOnly     bool
	uv             string
	allowLocalReqs bool
	tlsCert        string
	tlsKey         string
	sandbox        string
	network        string
	config         string
	queueTimeout   time.Duration
	logLevel       string
	insecure       bool
	transport      string
}

func newServerCommand() *cobra.Command {
	var opts serverOptions
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the atoll server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServer(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.listen, "listen", DefaultListen, "address to serve gRPC on (host:port)")
	cmd.PersistentFlags().StringVar(&opts.dataDir, "data-dir", defaultDataDir(), "directory holding all server state")
	f.StringVar(&opts.sandbox, "sandbox", "auto", "worker sandbox: auto, runc, crun, runsc or process (no isolation)")
	f.StringVar(&opts.network, "network", "host", "worker network: host or none")
	f.StringVar(&opts.transport, "worker-transport", sandbox.TransportPipes, "how workers reach the server: pipes, or connect (they dial back to a loopback listener, as cluster workers do)")
	f.StringVar(&opts.config, "config", "", "YAML file amending machine types, GPUs and capacity")
	f.DurationVar(&opts.queueTimeout, "queue-timeout", scheduler.DefaultQueueTimeout, "how long a call waits for capacity before failing")
	f.Int64Var(&opts.envMaxBytes, "env-max-bytes", 0, "evict least recently used environments beyond this total size (0: no limit)")
	f.StringVar(&opts.logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.AddCommand(newServerStopCommand(&opts.dataDir), newServerStatusCommand(&opts.dataDir))
	f.BoolVar(&opts.insecure, "insecure", false, "allow listening on a non-loopback address without TLS")
	f.StringVar(&opts.tlsCert, "tls-cert", "", "PEM certificate to serve TLS with (with --tls-key)")
	f.StringVar(&opts.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&opts.uv, "uv", "", "the uv binary that builds environments (default: uv on PATH)")
	f.BoolVar(&opts.wheelsOnly, "wheels-only", false, "install pre-built wheels only: building a source distribution runs its code on this host, outside the sandbox")
	f.BoolVar(&opts.allowLocalReqs, "allow-local-requirements", false, "let requirements name paths on this host (pkg @ file:///...)")
	f.StringVar(&opts.dataQuota, "data-quota", "10GiB", "each account's /data quota (0: no limit)")
	f.DurationVar(&opts.runRetention, "run-retention", 30*24*time.Hour, "how long finished runs and their logs are kept (0: forever)")
	return cmd
}

func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "atoll", "server")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "atoll-server")
	}
	return filepath.Join(home, ".local", "share", "atoll", "server")
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// checkListen refuses addresses other machines can reach unless the
// operator said so: without TLS, keys would cross the network in clear.
func checkListen(addr string, insecure bool) error {
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

// Files under the data directory.
const (
	stateFile = "state.db"
	pidFile   = "server.pid"
)

// writePIDFile records the running server's pid and address, for `atoll
// server stop` and `status` and for SDKs looking for a local server.
func writePIDFile(dataDir, addr string) error {
	content := fmt.Sprintf("%d\n%s\n", os.Getpid(), addr)
	if err := os.WriteFile(filepath.Join(dataDir, pidFile), []byte(content), 0o600); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}

// serverBuilderOptions configures the environment builder as the server
// does, so that `atoll envs` finds and builds the same environments.
func serverBuilderOptions(dataDir string, log *slog.Logger) (envbuild.Options, error) {
	lock, err := runtimeLock()
	return envbuild.Options{
		Root:            filepath.Join(dataDir, "envs"),
		Logger:          log,
		RuntimeLock:     lock,
		CompileBytecode: true,
		SeedPip:         true,
		Provided:        []string{"atoll"},
	}, err
}

// runtimeLockEnv names a requirements file that replaces the embedded
// runtime lock: scripts/test-latest.sh runs the tests on the newest releases
// with it.
const runtimeLockEnv = "ATOLL_RUNTIME_LOCK"

// runtimeLock is what workers' runtimes are built from: python.RuntimeLock
// unless ATOLL_RUNTIME_LOCK names another file.
func runtimeLock() ([]byte, error) {
	path := os.Getenv(runtimeLockEnv)
	if path == "" {
		return python.RuntimeLock, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", runtimeLockEnv, err)
	}
	return data, nil
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

// listenWorkers opens the loopback listener workers dial back to under
// --worker-transport connect, and serves its handshakes until closed.
func listenWorkers(log *slog.Logger) (*workerproto.Listener, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for workers: %w", err)
	}
	l := workerproto.NewListener(lis, log)
	go func() {
		if err := l.Serve(); err != nil {
			log.Error("worker listener stopped", "err", err)
		}
	}()
	log.Info("listening for workers", "addr", l.Addr().String())
	return l, nil
}

func runServer(ctx context.Context, opts serverOptions) error {
	log, err := newLogger(opts.logLevel)
	if err != nil {
		return err
	}
	if (opts.tlsCert == "") != (opts.tlsKey == "") {
		return fmt.Errorf("--tls-cert and --tls-key go together")
	}
	if err := checkListen(opts.listen, opts.insecure || opts.tlsCert != ""); err != nil {
		return err
	}
	dataDir, err := filepath.Abs(opts.dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	sdkDir, err := python.WriteSDK(filepath.Join(dataDir, "runtime"))
	if err != nil {
		return err
	}
	store, err := state.Open(ctx, filepath.Join(dataDir, stateFile), state.WithLogger(log.With("component", "state")))
	if err != nil {
		return err
	}
	defer store.Close()
	if n, err := store.InterruptUnfinishedRuns(ctx); err != nil {
		return err
	} else if n > 0 {
		log.Info("marked runs cut short by the last stop as interrupted", "runs", n)
	}
	authn := auth.New(store, auth.WithLogger(log.With("component", "auth")))
	history := server.NewHistory(store, opts.runRetention, log.With("component", "history"))
	historyCtx, stopHistory := context.WithCancel(context.WithoutCancel(ctx))
	historyDone := make(chan struct{})
	go func() { history.Run(historyCtx); close(historyDone) }()
	defer func() { stopHistory(); <-historyDone }()
	agent, err := os.Executable()
	if err != nil {
		return fmt.Errorf("locate the atoll binary: %w", err)
	}
	builderOpts, err := serverBuilderOptions(dataDir, log.With("component", "envbuild"))
	if err != nil {
		return err
	}
	builderOpts.MaxTotalBytes = opts.envMaxBytes
	builderOpts.NoBuild = opts.wheelsOnly
	builderOpts.UV = opts.uv
	builderOpts.AllowLocalRequirements = opts.allowLocalReqs
	builder, err := envbuild.New(builderOpts)
	if err != nil {
		return err
	}
	defer builder.Close()
	catalog, capacity, err := loadMachines(ctx, opts.config)
	if err != nil {
		return err
	}
	host, kind, warning, err := newHostLauncher(ctx, opts.sandbox, opts.network, filepath.Join(dataDir, "sandbox"), dataDir, log.With("component", "sandbox"))
	if err != nil {
		return err
	}
	if warning != "" {
		log.Warn(warning, "sandbox", kind)
	}
	localOpts := sandbox.LocalOptions{
		Host:         host,
		Environments: sandbox.EnvbuildResolver{Builder: builder},
		AgentPath:    agent,
		SDKDir:       sdkDir,
		Transport:    opts.transport,
		Logger:       log.With("component", "sandbox"),
	}
	if opts.transport == sandbox.TransportConnect {
		if opts.network == "none" && kind != sandbox.KindProcess {
			return fmt.Errorf("--worker-transport connect needs a network to dial back on; --network none leaves workers only their own loopback")
		}
		dialBack, err := listenWorkers(log.With("component", "workers"))
		if err != nil {
			return err
		}
		defer dialBack.Close()
		localOpts.DialBack, localOpts.TokenDir = dialBack, filepath.Join(dataDir, "worker-tokens")
	}
	launcher, err := sandbox.NewLocal(localOpts)
	if err != nil {
		return fmt.Errorf("--worker-transport: %w", err)
	}
	sched := scheduler.New(scheduler.Options{
		Launcher:     launcher,
		Tokens:       authn,
		Capacity:     capacity,
		QueueTimeout: opts.queueTimeout,
		Logger:       log.With("component", "scheduler"),
	})
	functions := server.NewFunctions(server.Options{
		Catalog:      catalog,
		Capacity:     capacity,
		Environments: server.BuiltEnvironments{Builder: builder},
		Scheduler:    sched,
		History:      history,
		Logger:       log.With("component", "server"),
	})

	lis, err := net.Listen("tcp", opts.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	launcher.SetServerAddr(workerHost(lis.Addr()))
	skip := auth.SkipMethods(healthpb.Health_Check_FullMethodName, healthpb.Health_Watch_FullMethodName)
	serverOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(server.MaxMessageBytes),
		grpc.MaxSendMsgSize(server.MaxMessageBytes),
		// Larger flow-control windows: uploads (sync_dir, large arguments)
		// are not held to a round trip per 64 KiB.
		grpc.InitialWindowSize(16 << 20),
		grpc.InitialConnWindowSize(16 << 20),
		grpc.NumStreamWorkers(uint32(runtime.NumCPU())),
		grpc.ChainUnaryInterceptor(authn.UnaryServerInterceptor(skip)),
		grpc.ChainStreamInterceptor(authn.StreamServerInterceptor(skip)),
	}
	if opts.tlsCert != "" {
		creds, err := credentials.NewServerTLSFromFile(opts.tlsCert, opts.tlsKey)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		serverOpts = append(serverOpts, grpc.Creds(creds))
	}
	gs := grpc.NewServer(serverOpts...)
	functions.Register(gs)
	server.NewAdmin(server.AdminOptions{
		Version: version, Sandbox: kind, SandboxWarning: warning,
		Scheduler: sched, Catalog: catalog, Capacity: capacity, Store: store,
	}).Register(gs)
	accountDataDir, err := registerStorage(gs, dataDir, opts.dataQuota, kind, log.With("component", "storage"))
	if err != nil {
		return err
	}
	launcher.SetDataDirs(accountDataDir)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	if err := writePIDFile(dataDir, lis.Addr().String()); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(dataDir, pidFile))
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	log.Info("atoll server listening", "addr", lis.Addr().String(), "data_dir", dataDir, "sandbox", kind, "capacity", capacity.Host().String(), "tls", opts.tlsCert != "")

	select {
	case err = <-serveErr:
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = sched.Shutdown(shutdownCtx)
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		gs.Stop()
	}
	return err
}
