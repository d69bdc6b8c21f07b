package sandbox

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "LANG=C", "A=1"}, []string{"PATH=/venv/bin:/bin", "B=2", "A=3"})
	want := []string{"PATH=/venv/bin:/bin", "LANG=C", "A=3", "B=2"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mergeEnv (-want +got):\n%s", diff)
	}
}

// recordingHost records the HostSpec it is asked to start and hands back a
// process whose agent end the test holds.
type recordingHost struct {
	spec  HostSpec
	agent net.Conn
}

type pipeProcess struct {
	conn net.Conn
	done chan struct{}
}

func (p *pipeProcess) Stdio() io.ReadWriteCloser { return p.conn }
func (p *pipeProcess) Kill() error {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	return nil
}
func (p *pipeProcess) Wait() (scheduler.Exit, error) { <-p.done; return scheduler.Exit{}, nil }

func (h *recordingHost) Start(_ context.Context, spec HostSpec) (HostProcess, error) {
	h.spec = spec
	server, agent := net.Pipe()
	h.agent = agent
	return &pipeProcess{conn: server, done: make(chan struct{})}, nil
}

type fixedEnvironment struct{ env HostEnvironment }

func (f fixedEnvironment) Resolve(context.Context, scheduler.Environment) (HostEnvironment, error) {
	return f.env, nil
}

var testEnvironment = HostEnvironment{
	Python:        "/envs/k/bin/python",
	RuntimeDir:    "/runtime/311",
	ReadOnlyPaths: []string{"/envs/k", "/usr/local", "/runtime/311"},
	Env:           []string{"VIRTUAL_ENV=/envs/k", "PATH=/envs/k/bin:/usr/bin"},
}

func neutralSpec() scheduler.WorkerSpec {
	return scheduler.WorkerSpec{
		ID: "w-1", Account: "acme", Machine: machine.Type{Name: "XS"},
		Environment: scheduler.Environment{Key: "k", Python: "3.11"},
		Token:       "awt_secret", Data: true, GPUs: []int{1},
	}
}

// The local launcher decides how: the agent's command line, the
// environment's paths and the account's directory come from the host.
func TestLocalLauncherTranslatesTheNeutralSpec(t *testing.T) {
	host := &recordingHost{}
	l, err := NewLocal(LocalOptions{
		Host: host, Environments: fixedEnvironment{testEnvironment},
		DataDirs:  func(account string) (string, error) { return "/data-dir/accounts/" + account, nil },
		AgentPath: "/bin/atoll", SDKDir: "/sdk", ServerAddr: "127.0.0.1:1",
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.Start(context.Background(), neutralSpec())
	if err != nil {
		t.Fatal(err)
	}
	defer host.agent.Close()
	want := HostSpec{
		ID: "w-1", Account: "acme", Machine: machine.Type{Name: "XS"},
		Args:          []string{"/bin/atoll", "worker", "--python", "/envs/k/bin/python", "--sdk", "/sdk", "--runtime", "/runtime/311"},
		ReadOnlyPaths: []string{"/sdk", "/envs/k", "/usr/local", "/runtime/311"},
		Env: []string{
			"PATH=/envs/k/bin:/usr/bin", "LANG=C.UTF-8", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1",
			"VIRTUAL_ENV=/envs/k", "ATOLL_HOST=127.0.0.1:1", "ATOLL_WORKER_TOKEN=awt_secret",
		},
		DataDir: "/data-dir/accounts/acme",
		GPUs:    []int{1},
	}
	if diff := cmp.Diff(want, host.spec); diff != "" {
		t.Errorf("host spec (-want +got):\n%s", diff)
	}
	// Over pipes, the connection is the agent's stdio, at once.
	if c, err := p.Conn(context.Background()); err != nil || c == nil {
		t.Fatalf("Conn = %v, %v", c, err)
	}
	p.Kill()
	p.Wait()
}

func TestLocalLauncherConnectTransport(t *testing.T) {
	dialBack := serveDialBack(t)

	host := &recordingHost{}
	tokens := filepath.Join(t.TempDir(), "tokens")
	l, err := NewLocal(LocalOptions{
		Host: host, Environments: fixedEnvironment{testEnvironment},
		AgentPath: "/bin/atoll", SDKDir: "/sdk",
		Transport: TransportConnect, DialBack: dialBack, TokenDir: tokens,
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.Start(context.Background(), neutralSpec())
	if err != nil {
		t.Fatal(err)
	}
	defer host.agent.Close()
	args := host.spec.Args
	i := slices.Index(args, "--connect")
	if i < 0 || args[i+1] != dialBack.Addr().String() || args[i+2] != "--token-file" {
		t.Fatalf("args = %q, want --connect %s --token-file F", args, dialBack.Addr())
	}
	tokenPath := args[i+3]
	token, err := os.ReadFile(tokenPath)
	if err != nil || string(token) != "awt_secret" {
		t.Fatalf("token file = %q, %v", token, err)
	}
	if dir := filepath.Dir(tokenPath); !slices.Contains(host.spec.ReadOnlyPaths, dir) || !strings.HasPrefix(dir, tokens) {
		t.Errorf("token directory %s is not among the worker's read-only paths %q", dir, host.spec.ReadOnlyPaths)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	agentConn, err := workerproto.Dial(ctx, dialBack.Addr().String(), string(token))
	if err != nil {
		t.Fatal(err)
	}
	defer agentConn.Close()
	if c, err := p.Conn(ctx); err != nil || c == nil {
		t.Fatalf("Conn = %v, %v", c, err)
	}
	p.Kill()
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(tokenPath)); !os.IsNotExist(err) {
		t.Errorf("token directory left behind: %v", err)
	}
}

// A worker that ends before dialing back fails its Conn instead of
// leaving it waiting.
func TestLocalLauncherConnectFailsWhenTheWorkerEnds(t *testing.T) {
	dialBack := serveDialBack(t)
	host := &recordingHost{}
	l, err := NewLocal(LocalOptions{
		Host: host, Environments: fixedEnvironment{testEnvironment}, AgentPath: "/bin/atoll", SDKDir: "/sdk",
		Transport: TransportConnect, DialBack: dialBack, TokenDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.Start(context.Background(), neutralSpec())
	if err != nil {
		t.Fatal(err)
	}
	defer host.agent.Close()
	p.Kill()
	go p.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.Conn(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("Conn = %v (ctx %v), want an error at once", err, ctx.Err())
	}
}

// serveDialBack serves a dial-back listener on loopback until the test ends.
func serveDialBack(t *testing.T) *workerproto.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dialBack := workerproto.NewListener(lis, nil)
	served := make(chan error, 1)
	go func() { served <- dialBack.Serve() }()
	t.Cleanup(func() { dialBack.Close(); <-served })
	return dialBack
}

// A function whose pickle needs cloudpickle has its runner import it as
// the worker starts; others do not.
func TestLocalLauncherPassesThePreloadToTheAgent(t *testing.T) {
	for _, preload := range []bool{false, true} {
		host := &recordingHost{}
		l, err := NewLocal(LocalOptions{Host: host, Environments: fixedEnvironment{testEnvironment}, AgentPath: "/bin/atoll", SDKDir: "/sdk"})
		if err != nil {
			t.Fatal(err)
		}
		spec := neutralSpec()
		spec.Token, spec.PreloadCloudpickle = "", preload
		p, err := l.Start(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Contains(host.spec.Args, "--preload-cloudpickle"); got != preload {
			t.Errorf("PreloadCloudpickle %v: agent args %q", preload, host.spec.Args)
		}
		host.agent.Close()
		p.Kill()
		p.Wait()
	}
}
