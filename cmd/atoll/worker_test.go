package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/agent"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// localWorker runs runLocalWorker in this process on pipes, as the SDK runs
// `atoll worker --local` for host=local.
type localWorker struct {
	conn *workerproto.Conn
	// stop closes the worker's input and returns what runLocalWorker did.
	stop func() error
}

func startLocalWorker(t *testing.T, local localOptions) *localWorker {
	t.Helper()
	if _, err := exec.LookPath("uv"); err != nil {
		t.Skip("uv is not installed")
	}
	// enterVenv changes this process's environment; restore it afterwards.
	for _, name := range []string{"PATH", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"} {
		t.Setenv(name, os.Getenv(name))
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	w := &localWorker{conn: workerproto.NewConn(pipeStream{Reader: outR, w: inW})}
	opts := agent.Options{Conn: workerproto.NewAgentConn(inR, outW), Logger: slog.New(slog.DiscardHandler)}
	done := make(chan error, 1)
	go func() { done <- runLocalWorker(ctx, local, opts); outW.Close() }()
	w.stop = sync.OnceValue(func() error {
		inW.Close()
		go func() { _, _ = io.Copy(io.Discard, outR) }()
		defer cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Error("local worker did not stop")
			return nil
		}
	})
	t.Cleanup(func() { _ = w.stop() })
	return w
}

// pipeStream is the server's side of the worker's two pipes.
type pipeStream struct {
	io.Reader
	w *io.PipeWriter
}

func (p pipeStream) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p pipeStream) Close() error                { return p.w.Close() }

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

func TestLocalWorkerReportsEnvironmentFailures(t *testing.T) {
	_, version := hostPythonVersion(t)
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
			w := startLocalWorker(t, localOptions{enabled: true, envRoot: t.TempDir(), python: tt.python, requirements: tt.requirements})
			var outputs int
			_, err := w.conn.AwaitReady(context.Background(), func(*atollv1.Output) { outputs++ })
			var fe *workerproto.FailureError
			if !errors.As(err, &fe) || outputs != 0 {
				t.Fatalf("first event: %v after %d outputs, want a failure", err, outputs)
			}
			f := fe.Failure
			if f.GetKind() != tt.kind || !strings.Contains(f.GetMessage(), tt.message) {
				t.Fatalf("failure = %v %q, want %v containing %q", f.GetKind(), f.GetMessage(), tt.kind, tt.message)
			}
			var exit exitError
			if err := w.stop(); !errors.As(err, &exit) || exit.code != 1 {
				t.Fatalf("runLocalWorker = %v, want exit status 1", err)
			}
		})
	}
}

// pickled returns the standard pickle of a Python expression as the runner
// reads a payload: an empty manifest (4 zero bytes, see
// python/atoll/_pickling.py), then the pickle (cloudpickle accepts any).
func pickled(t *testing.T, python, expr string) []byte {
	t.Helper()
	out, err := exec.Command(python, "-c", "import pickle, sys; sys.stdout.buffer.write(pickle.dumps("+expr+"))").Output()
	if err != nil {
		t.Fatalf("pickle %s: %v", expr, err)
	}
	return append([]byte{0, 0, 0, 0}, out...)
}

// TestLocalWorkerBuildsItsEnvironmentAndRunsCalls builds a real environment
// with uv (the runtime's packages come from the package index).
func TestLocalWorkerBuildsItsEnvironmentAndRunsCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an environment from the package index")
	}
	python, version := hostPythonVersion(t)
	root := t.TempDir()
	w := startLocalWorker(t, localOptions{enabled: true, envRoot: root, python: version})

	var buildLog strings.Builder
	_, err := w.conn.AwaitReady(context.Background(), func(o *atollv1.Output) {
		if o.GetStream() != atollv1.Stream_STREAM_SYSTEM {
			t.Errorf("output before ready on %v, want the system stream: %q", o.GetStream(), o.GetData())
		}
		buildLog.Write(o.GetData())
	})
	if err != nil {
		t.Fatalf("want ready, got %v; build log:\n%s", err, buildLog.String())
	}
	if !strings.Contains(buildLog.String(), "cloudpickle") {
		t.Errorf("build log does not show the runtime being installed:\n%s", buildLog.String())
	}

	fn := pickled(t, python, "eval")
	args := pickled(t, python, `(("__import__('sys').prefix",), {})`)
	res, err := w.conn.Call(context.Background(), fn, args, func(*atollv1.Output) {})
	if err != nil || res.GetValue() == nil {
		t.Fatalf("result = %v, %v, want a value", res, err)
	}
	value := res.GetValue()
	if envs := filepath.Join(root, "envs"); !strings.Contains(string(value), envs) {
		t.Fatalf("the function ran with sys.prefix %q, want one under %s", value, envs)
	}
	if err := w.stop(); err != nil {
		t.Fatalf("runLocalWorker = %v after its input closed, want nil", err)
	}
}
