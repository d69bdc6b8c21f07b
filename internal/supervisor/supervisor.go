// Package supervisor is host=local's server: one per user and cache
// directory, started on demand by the SDK and reused by later processes. It
// serves the same Functions and Admin services as atoll server, over the
// same scheduler, with the plain-process launcher and the user's cache
// directory for environments, so that keep_alive, reuse and crash handling
// exist once, in internal/scheduler.
//
// It listens on a unix socket in a directory only this user may enter
// (<cache>/run, mode 0700) and admits only processes of this user, by the
// kernel's record of the peer (SO_PEERCRED); no keys exist. Each calling
// process is an account of its own (auth.PeerAccount): its warm workers
// serve nobody else and are torn down when its last connection closes, that
// is when it exits. Workers start in the caller's working directory.
//
// It must not sandbox anything, enforce machine types' limits or listen on
// a network: it runs the user's code as the user, on the user's machine.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/sandbox"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/server"
	"github.com/atoll-dev/atoll/python"
)

// DefaultIdleExit is how long a supervisor with no caller connected stays.
const DefaultIdleExit = 10 * time.Minute

// Options configures Run.
type Options struct {
	// Root is the user's atoll cache directory (~/.cache/atoll): the
	// environments, their uv cache, the SDK for workers, and run/ with the
	// socket.
	Root string
	// Agent is the atoll binary workers run as their agent.
	Agent string
	// Version is reported by the Admin service.
	Version string
	// RuntimeLock is the requirements file workers' runtimes are built
	// from (python.RuntimeLock unless overridden).
	RuntimeLock []byte
	// IdleExit is how long to stay with no caller connected; 0 means
	// DefaultIdleExit.
	IdleExit time.Duration
	Logger   *slog.Logger
}

// Run serves host=local until ctx ends or no caller has been connected for
// IdleExit.
func Run(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.IdleExit == 0 {
		opts.IdleExit = DefaultIdleExit
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return err
	}
	dir, err := privateDir(root)
	if err != nil {
		return err
	}
	held, err := lock(dir)
	if err != nil {
		return err
	}
	defer held.Close()
	builder, sdkDir, err := openEnvironments(root, opts.RuntimeLock, log.With("component", "envbuild"))
	if err != nil {
		return err
	}
	defer builder.Close()
	launcher, err := sandbox.NewLocal(sandbox.LocalOptions{
		Host:         callerDirHost{sandbox.NewProcess(sandbox.ProcessOptions{StateDir: dir, Stderr: os.Stderr, Logger: log.With("component", "launcher")})},
		Environments: sandbox.EnvbuildResolver{Builder: builder},
		AgentPath:    opts.Agent,
		SDKDir:       sdkDir,
		BaseEnv:      workerEnv(os.Environ()),
		Logger:       log.With("component", "launcher"),
	})
	if err != nil {
		return err
	}
	sched := scheduler.New(scheduler.Options{
		// No Capacity: machine types set no limits on the caller's machine;
		// no Tokens: nested calls come back through this socket.
		Launcher: launcher,
		Logger:   log.With("component", "scheduler"),
	})
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	gs := newGRPCServer(sched, builder, opts, log, stop)
	lis, err := listen(dir)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, pidName), fmt.Appendf(nil, "%d\n", os.Getpid()), 0o600); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return serve(ctx, gs, lis, sched, log)
}

// openEnvironments opens the user's environment builder, laid out as the
// server lays out its own, and writes the SDK workers put on their path.
func openEnvironments(root string, runtimeLock []byte, log *slog.Logger) (*envbuild.Builder, string, error) {
	builder, err := envbuild.New(envbuild.Options{
		Root:            root,
		Logger:          log,
		RuntimeLock:     runtimeLock,
		CompileBytecode: true,
		SeedPip:         true,
		Provided:        []string{"atoll"},
		// host=local runs on the caller's own machine: its paths are theirs.
		AllowLocalRequirements: true,
	})
	if err != nil {
		return nil, "", fmt.Errorf("host=local cannot build environments under %s: %w", root, err)
	}
	sdkDir, err := python.WriteSDK(filepath.Join(root, "sdk"))
	if err != nil {
		builder.Close()
		return nil, "", err
	}
	return builder, sdkDir, nil
}

// newGRPCServer assembles the services: peer-credential authentication,
// one account per calling process, idle workers torn down when it leaves.
func newGRPCServer(sched *scheduler.Scheduler, builder *envbuild.Builder, opts Options, log *slog.Logger, idle func()) *grpc.Server {
	creds := newSessions(auth.PeerCredentials(os.Getuid()), func(pid int) {
		log.Debug("caller left", "pid", pid)
		sched.DiscardIdle(auth.PeerAccount(pid))
	}, opts.IdleExit, func() {
		log.Info("no caller for a while; stopping", "idle_exit", opts.IdleExit)
		idle()
	})
	gs := grpc.NewServer(
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(server.MaxMessageBytes),
		grpc.MaxSendMsgSize(server.MaxMessageBytes),
		grpc.ChainUnaryInterceptor(auth.PeerUnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(auth.PeerStreamServerInterceptor()),
	)
	catalog := machine.Defaults()
	running := server.NewRunning()
	server.NewFunctions(server.Options{
		Catalog:          catalog,
		Environments:     server.BuiltEnvironments{Builder: builder},
		Scheduler:        sched,
		Running:          running,
		OnCallersMachine: true,
		Logger:           log.With("component", "server"),
	}).Register(gs)
	server.NewAdmin(server.AdminOptions{
		Version: opts.Version, Sandbox: sandbox.KindProcess,
		SandboxWarning: "host=local: workers run as plain processes of this user, not isolated",
		Scheduler:      sched, Catalog: catalog, Running: running, Logger: log.With("component", "admin"),
	}).Register(gs)
	return gs
}

// MetadataWorkingDir carries a caller's working directory, which the
// workers started for its call run in.
const MetadataWorkingDir = "x-atoll-working-dir"

// callerDirHost starts agents in the working directory the call that
// needed them names (the call's context reaches Start).
type callerDirHost struct{ sandbox.HostLauncher }

func (h callerDirHost) Start(ctx context.Context, spec sandbox.HostSpec) (sandbox.HostProcess, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(MetadataWorkingDir); len(v) == 1 && filepath.IsAbs(v[0]) {
		spec.Args = append(spec.Args, "--workdir", v[0])
	}
	return h.HostLauncher.Start(ctx, spec)
}

// workerEnv is the supervisor's environment (the SDK starts it with the
// first caller's), less what would let the caller's Python packages or a
// worker's credentials into a worker: its environment holds only its
// requirements.
func workerEnv(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "ATOLL_WORKER_TOKEN":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// listen binds the socket, replacing one a dead supervisor left (the lock
// says none runs), and lets only this user connect.
func listen(dir string) (net.Listener, error) {
	path := filepath.Join(dir, socketName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	return lis, nil
}

// serve runs gs until ctx ends, then tears every worker down.
func serve(ctx context.Context, gs *grpc.Server, lis net.Listener, sched *scheduler.Scheduler, log *slog.Logger) error {
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	log.Info("host=local supervisor listening", "socket", lis.Addr().String())
	var err error
	select {
	case err = <-serveErr:
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = sched.Shutdown(shutdownCtx)
	gs.Stop()
	return err
}
