package supervisor_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/supervisor"
	"github.com/atoll-dev/atoll/python"
)

// startSupervisor runs a supervisor on root in this process and returns a
// Functions client connected through its socket.
func startSupervisor(t *testing.T, root, agent string) atollv1.FunctionsClient {
	t.Helper()
	if _, err := exec.LookPath("uv"); err != nil {
		t.Skip("uv is not installed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- supervisor.Run(ctx, supervisor.Options{Root: root, Agent: agent, RuntimeLock: python.RuntimeLock})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("supervisor.Run = %v", err)
		}
	})
	sock := supervisor.SocketPath(root)
	// Until it accepts a connection: the socket's file exists from bind,
	// a moment before it listens (a call then would be refused).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens at %s", sock)
		}
	}
	conn, err := grpc.NewClient("unix:"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return atollv1.NewFunctionsClient(conn)
}

// run sends one call from workDir and returns the system output before the last event,
// and that event.
func run(t *testing.T, c atollv1.FunctionsClient, workDir string, req *atollv1.RunRequest) (string, *atollv1.RunEvent) {
	t.Helper()
	ctx := metadata.AppendToOutgoingContext(context.Background(), supervisor.MetadataWorkingDir, workDir)
	stream, err := c.Run(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	var last *atollv1.RunEvent
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return log.String(), last
		}
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if o := ev.GetOutput(); o != nil && o.GetStream() == atollv1.Stream_STREAM_SYSTEM {
			log.Write(o.GetData())
		}
		last = ev
	}
}

func hostPythonVersion(t *testing.T) (python, version string) {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	out, err := exec.Command(python, "-c", `import sys; print("%d.%d" % sys.version_info[:2])`).Output()
	if err != nil {
		t.Fatalf("python3 version: %v", err)
	}
	return python, strings.TrimSpace(string(out))
}

func TestReportsEnvironmentFailures(t *testing.T) {
	_, version := hostPythonVersion(t)
	c := startSupervisor(t, t.TempDir(), "/nonexistent/atoll")
	tests := []struct {
		name         string
		python       string
		requirements []string
		kind         atollv1.FailureKind
		message      string
	}{
		{"python version not installed", "2.7", nil, atollv1.FailureKind_FAILURE_KIND_PYTHON_UNAVAILABLE, "CPython 2.7"},
		{"malformed python version", "three", nil, atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD, "major.minor"},
		{"requirement that is an option", version, []string{"-r /etc/passwd"}, atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD, "looks like an option"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ev := run(t, c, t.TempDir(), &atollv1.RunRequest{
				FunctionName: "f", Function: []byte("x"), MachineType: "XS",
				Environment: &atollv1.Environment{PythonVersion: tt.python, Requirements: tt.requirements},
			})
			f := ev.GetFailure()
			if f == nil {
				t.Fatalf("last event = %v, want a failure", ev)
			}
			if f.GetKind() != tt.kind || !strings.Contains(f.GetMessage(), tt.message) {
				t.Fatalf("failure = %v %q, want %v containing %q", f.GetKind(), f.GetMessage(), tt.kind, tt.message)
			}
		})
	}
}

// pickled returns the standard pickle of a Python expression behind an
// empty manifest (a 4-byte length of 0); the runner reads it with
// cloudpickle, which accepts any pickle.
func pickled(t *testing.T, python, expr string) []byte {
	t.Helper()
	out, err := exec.Command(python, "-c", "import pickle, sys; sys.stdout.buffer.write(pickle.dumps("+expr+"))").Output()
	if err != nil {
		t.Fatalf("pickle %s: %v", expr, err)
	}
	return append([]byte{0, 0, 0, 0}, out...)
}

// buildAgent builds the atoll binary, which workers run as their agent.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "atoll")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/atoll-dev/atoll/cmd/atoll").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestBuildsItsEnvironmentAndRunsCalls builds a real environment with uv
// (the runtime's packages come from the package index) and runs a call in a
// worker started in the caller's working directory.
func TestBuildsItsEnvironmentAndRunsCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an environment from the package index")
	}
	python, version := hostPythonVersion(t)
	root := t.TempDir()
	c := startSupervisor(t, root, buildAgent(t))
	fn := pickled(t, python, "eval")
	args := pickled(t, python, `(("__import__('sys').prefix + ' ' + __import__('os').getcwd()",), {})`)
	workDir := t.TempDir()
	buildLog, ev := run(t, c, workDir, &atollv1.RunRequest{
		FunctionName: "prefix", Function: fn, Arguments: args, MachineType: "XL",
		Environment: &atollv1.Environment{PythonVersion: version},
	})
	if !strings.Contains(buildLog, "cloudpickle") {
		t.Errorf("build log does not show the runtime being installed:\n%s", buildLog)
	}
	value := ev.GetResult().GetValue()
	if value == nil {
		t.Fatalf("last event = %v, want a value", ev)
	}
	if envs := filepath.Join(root, "envs"); !strings.Contains(string(value), envs) {
		t.Fatalf("the function ran with sys.prefix %q, want one under %s", value, envs)
	}
	if !strings.Contains(string(value), " "+workDir) {
		t.Fatalf("the function ran in %q, want the caller's directory %s", value, workDir)
	}
}

func TestRefusesADirectoryOthersCanEnter(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := supervisor.Run(context.Background(), supervisor.Options{Root: root})
	if !errors.Is(err, supervisor.ErrUnsafeDir) {
		t.Fatalf("Run = %v, want ErrUnsafeDir", err)
	}
}

func TestOneSupervisorPerCacheDirectory(t *testing.T) {
	root := t.TempDir()
	startSupervisor(t, root, "/nonexistent/atoll")
	err := supervisor.Run(context.Background(), supervisor.Options{Root: root})
	if !errors.Is(err, supervisor.ErrRunning) {
		t.Fatalf("a second Run = %v, want ErrRunning", err)
	}
}
