package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// How a local worker's agent reaches the server.
const (
	// TransportPipes hands the agent its stdin and stdout.
	TransportPipes = "pipes"
	// TransportConnect starts the agent with --connect: it dials the
	// server's worker listener back, as workers of cluster launchers do.
	TransportConnect = "connect"
)

// tokenFile is the name of a worker's token file in its token directory.
const tokenFile = "token"

// HostEnvironment is where on this host a built environment lives.
type HostEnvironment struct {
	// Python is the interpreter to run.
	Python string
	// RuntimeDir holds the runner's own needs ("" if the interpreter has them).
	RuntimeDir string
	// ReadOnlyPaths must be visible inside the worker.
	ReadOnlyPaths []string
	// Env is added to the worker's environment (PATH, VIRTUAL_ENV).
	Env []string
}

// Resolver finds a prepared environment on this host.
type Resolver interface {
	Resolve(ctx context.Context, env scheduler.Environment) (HostEnvironment, error)
}

// LocalOptions configures NewLocal.
type LocalOptions struct {
	// Host starts the agents: an OCILauncher or a ProcessLauncher.
	Host HostLauncher
	// Environments resolves a spec's environment to host paths.
	Environments Resolver
	// DataDirs, if set, returns an account's persistent directory, which a
	// worker that asks for /data sees there; it may be set later with
	// SetDataDirs, before the first Start.
	DataDirs func(account string) (string, error)
	// AgentPath is the atoll binary workers run as their agent.
	AgentPath string
	// SDKDir holds the atoll Python package for workers.
	SDKDir string
	// BaseEnv is the environment every worker starts from; default: PATH,
	// LANG and unbuffered Python, nothing of the server's own environment.
	BaseEnv []string
	// ServerAddr is where workers make nested calls (ATOLL_HOST); it may
	// be set later with SetServerAddr, before the first Start.
	ServerAddr string
	// Transport is TransportPipes (the default) or TransportConnect.
	Transport string
	// DialBack receives the workers' connections under TransportConnect.
	DialBack *workerproto.Listener
	// TokenDir holds, under TransportConnect, one directory per worker with
	// its token file, mounted read-only into that worker alone. It must
	// not lie under the sandbox's state directory, which no worker sees.
	// The launcher owns it: what a previous run left there is removed.
	TokenDir string
	// Logger receives the launcher's diagnostics. Default: discard.
	Logger *slog.Logger
	// ServerSocketDir, if set, holds the unix sockets workers reach the
	// server through (ServerAddr "unix:...", DialBack on a unix socket)
	// where they do not share its network; every worker sees it read-only.
	ServerSocketDir string
}

// LocalLauncher runs workers on this host: it turns the launcher-neutral
// scheduler.WorkerSpec into a HostSpec (the agent's command line, the
// environment's paths, the account's data directory) and starts it with
// its HostLauncher. It implements scheduler.Launcher.
type LocalLauncher struct {
	opts LocalOptions

	mu       sync.RWMutex
	addr     string
	dataDirs func(account string) (string, error)

	compiled sync.Map // Python major.minor -> *sync.Once: the SDK's bytecode is written
}

var _ scheduler.Launcher = (*LocalLauncher)(nil)

// NewLocal returns a local launcher.
func NewLocal(opts LocalOptions) (*LocalLauncher, error) {
	if opts.Host == nil || opts.Environments == nil || opts.AgentPath == "" || opts.SDKDir == "" {
		return nil, errors.New("local launcher: Host, Environments, AgentPath and SDKDir are required")
	}
	switch opts.Transport {
	case "":
		opts.Transport = TransportPipes
	case TransportPipes:
	case TransportConnect:
		if opts.DialBack == nil || opts.TokenDir == "" {
			return nil, errors.New("local launcher: the connect transport needs DialBack and TokenDir")
		}
		// Tokens a previous run left (it was killed) admit nothing now.
		if err := os.RemoveAll(opts.TokenDir); err != nil {
			return nil, fmt.Errorf("local launcher: %w", err)
		}
		if err := os.MkdirAll(opts.TokenDir, 0o711); err != nil {
			return nil, fmt.Errorf("local launcher: %w", err)
		}
	default:
		return nil, fmt.Errorf("local launcher: transport %q: want %s or %s", opts.Transport, TransportPipes, TransportConnect)
	}
	if opts.BaseEnv == nil {
		opts.BaseEnv = defaultWorkerEnv()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &LocalLauncher{opts: opts, addr: opts.ServerAddr, dataDirs: opts.DataDirs}, nil
}

// SetServerAddr sets where workers make nested calls, once the server
// listens; call it before the first Start.
func (l *LocalLauncher) SetServerAddr(addr string) {
	l.mu.Lock()
	l.addr = addr
	l.mu.Unlock()
}

// SetDataDirs sets how a worker gets its account's /data directory, once
// storage is ready; call it before the first Start.
func (l *LocalLauncher) SetDataDirs(dirs func(account string) (string, error)) {
	l.mu.Lock()
	l.dataDirs = dirs
	l.mu.Unlock()
}

// compileSDK writes the SDK's bytecode for one Python version, once:
// workers mount the SDK read-only, where Python cannot cache what it
// compiles, so each cold start would compile the runner and its pickling
// module again (about 5 ms). The interpreter runs isolated and without
// site (-I -S), so nothing of the environment's own packages runs here.
func (l *LocalLauncher) compileSDK(ctx context.Context, version, python string) {
	once, _ := l.compiled.LoadOrStore(version, new(sync.Once))
	once.(*sync.Once).Do(func() {
		out, err := exec.CommandContext(ctx, python, "-I", "-S", "-m", "compileall", "-q", l.opts.SDKDir).CombinedOutput()
		if err != nil {
			l.opts.Logger.Warn("cannot compile the SDK's bytecode; workers compile it as they start",
				"python", version, "err", err, "output", strings.TrimSpace(string(out)))
		}
	})
}

// Start resolves the spec's environment and data directory and starts the
// worker's agent. Under TransportConnect it returns before the agent has
// dialed back; the Process's Conn waits for it.
func (l *LocalLauncher) Start(ctx context.Context, spec scheduler.WorkerSpec) (scheduler.Process, error) {
	env, err := l.opts.Environments.Resolve(ctx, spec.Environment)
	if err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	l.compileSDK(ctx, spec.Environment.Python, env.Python)
	host := HostSpec{
		ID:            spec.ID,
		Account:       spec.Account,
		Machine:       spec.Machine,
		Args:          []string{l.opts.AgentPath, "worker", "--python", env.Python, "--sdk", l.opts.SDKDir, "--runtime", env.RuntimeDir},
		ReadOnlyPaths: append([]string{l.opts.SDKDir}, env.ReadOnlyPaths...),
		GPUs:          spec.GPUs,
	}
	if spec.PreloadCloudpickle {
		host.Args = append(host.Args, "--preload-cloudpickle")
	}
	if l.opts.ServerSocketDir != "" {
		host.ReadOnlyPaths = append(host.ReadOnlyPaths, l.opts.ServerSocketDir)
	}
	l.mu.RLock()
	addr, dataDirs := l.addr, l.dataDirs
	l.mu.RUnlock()
	extra := env.Env
	if spec.Token != "" {
		extra = append(extra, "ATOLL_HOST="+addr, "ATOLL_WORKER_TOKEN="+spec.Token)
	}
	host.Env = mergeEnv(l.opts.BaseEnv, extra)
	if spec.Data && dataDirs != nil {
		if host.DataDir, err = dataDirs(spec.Account); err != nil {
			return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
		}
	}
	if l.opts.Transport == TransportConnect {
		return l.startConnecting(ctx, spec, host)
	}
	p, err := l.opts.Host.Start(ctx, host)
	if err != nil {
		return nil, err
	}
	return &localProcess{host: p, conn: workerproto.NewConn(p.Stdio()), ended: make(chan struct{})}, nil
}

// startConnecting starts an agent that dials back with a token from a file
// only it can see.
func (l *LocalLauncher) startConnecting(ctx context.Context, spec scheduler.WorkerSpec, host HostSpec) (scheduler.Process, error) {
	if err := validID(spec.ID); err != nil {
		return nil, err
	}
	token := spec.Token
	if token == "" {
		b := make([]byte, 32)
		rand.Read(b)
		token = base64.RawURLEncoding.EncodeToString(b)
	}
	dir := filepath.Join(l.opts.TokenDir, spec.ID)
	if err := os.Mkdir(dir, 0o711); err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	// The agent reads its token before it starts any user code, as the
	// server's own user (uid 0 at its start in a container, see
	// splitUsers; the server's user in a plain process): the user's code,
	// another user, cannot read it.
	path := filepath.Join(dir, tokenFile)
	if err := os.WriteFile(path, []byte(token), 0o400); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	host.ReadOnlyPaths = append(host.ReadOnlyPaths, dir)
	host.Args = append(host.Args, "--connect", workerproto.DialAddress(l.opts.DialBack.Addr()), "--token-file", path)
	expected := l.opts.DialBack.Expect(token)
	p, err := l.opts.Host.Start(ctx, host)
	if err != nil {
		expected.Cancel()
		os.RemoveAll(dir)
		return nil, err
	}
	return &localProcess{host: p, expected: expected, tokenDir: dir, ended: make(chan struct{})}, nil
}

// localProcess is a worker started by the LocalLauncher.
type localProcess struct {
	host HostProcess
	// conn is the protocol on the agent's pipes; nil under
	// TransportConnect, where expected delivers it.
	conn     *workerproto.Conn
	expected *workerproto.Expected
	tokenDir string

	endOnce sync.Once
	ended   chan struct{} // closed once the agent has ended
}

var _ scheduler.Settler = (*localProcess)(nil)

func (p *localProcess) Conn(ctx context.Context) (*workerproto.Conn, error) {
	if p.conn != nil {
		return p.conn, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.ended:
			cancel()
		case <-ctx.Done():
		}
	}()
	rwc, err := p.expected.Wait(ctx)
	if err != nil {
		select {
		case <-p.ended:
			return nil, errors.New("the worker ended before it dialed back")
		default:
			return nil, err
		}
	}
	return workerproto.NewConn(rwc), nil
}

func (p *localProcess) Kill() error { return p.host.Kill() }

// Wait waits for the agent, then forgets its token and closes what it
// left open.
func (p *localProcess) Wait() (scheduler.Exit, error) {
	exit, err := p.host.Wait()
	p.endOnce.Do(func() {
		close(p.ended)
		if p.expected != nil {
			p.expected.Cancel()
			// The agent spoke on its connection; its pipes are unused.
			p.host.Stdio().Close()
			err = errors.Join(err, os.RemoveAll(p.tokenDir))
		}
	})
	return exit, err
}

// Settle holds the worker to its machine type's limits where its host
// process started with more.
func (p *localProcess) Settle() error {
	if s, ok := p.host.(scheduler.Settler); ok {
		return s.Settle()
	}
	return nil
}

// defaultWorkerEnv is the environment every worker starts from: nothing of
// the server's own environment leaks into it.
func defaultWorkerEnv() []string {
	return []string{
		"PATH=" + defaultPath,
		"LANG=C.UTF-8",
		"PYTHONUNBUFFERED=1",
		"PYTHONDONTWRITEBYTECODE=1",
	}
}

// mergeEnv returns base with extra's variables added; extra wins, and each
// name appears once.
func mergeEnv(base, extra []string) []string {
	out := make([]string, 0, len(base)+len(extra))
	index := make(map[string]int, len(base)+len(extra))
	for _, kv := range append(append([]string(nil), base...), extra...) {
		name, _, _ := strings.Cut(kv, "=")
		if i, ok := index[name]; ok {
			out[i] = kv
			continue
		}
		index[name] = len(out)
		out = append(out, kv)
	}
	return out
}
