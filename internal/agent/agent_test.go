package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// emptyManifest is the 4-byte header of a payload that refers to no
// installed distribution (python/atoll/_pickling.py).
const emptyManifest = "\x00\x00\x00\x00"

// pickled returns the standard pickle of a Python expression as the runner
// reads a payload: an empty manifest, then the pickle (cloudpickle accepts
// any pickle).
func pickled(t *testing.T, python, expr string) []byte {
	t.Helper()
	return pickledWith(t, python, "pickle", expr)
}

// cloudpickled is pickled for what only cloudpickle pickles (a lambda).
func cloudpickled(t *testing.T, python, expr string) []byte {
	t.Helper()
	return pickledWith(t, python, "cloudpickle", expr)
}

func pickledWith(t *testing.T, python, module, expr string) []byte {
	t.Helper()
	out, err := exec.Command(python, "-c", "import "+module+", sys; sys.stdout.buffer.write("+module+".dumps("+expr+"))").Output()
	if err != nil {
		t.Fatalf("%s %s: %v", module, expr, err)
	}
	return append([]byte(emptyManifest), out...)
}

// agentHarness drives an agent from the server's end of the protocol.
type agentHarness struct {
	conn *workerproto.Conn
	done chan error
	// hangUp closes the server's end of the stream, as a dying server's
	// kernel does.
	hangUp func()
}

// pipeStream is the server's side of the agent's two pipes.
type pipeStream struct {
	io.Reader
	w *io.PipeWriter
}

func (p pipeStream) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p pipeStream) Close() error                { return p.w.Close() }

func (h *agentHarness) call(t *testing.T, fn, args []byte) (*atollv1.Result, string, error) {
	t.Helper()
	var out strings.Builder
	res, err := h.conn.Call(context.Background(), fn, args, func(o *atollv1.Output) { out.Write(o.GetData()) })
	return res, out.String(), err
}

func startAgent(t *testing.T) (*agentHarness, string) {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	if exec.Command(python, "-c", "import cloudpickle").Run() != nil {
		t.Skip("cloudpickle is not installed for python3 (pip install cloudpickle)")
	}
	_, file, _, _ := runtime.Caller(0)
	sdk := filepath.Join(filepath.Dir(file), "..", "..", "python")
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	a := New(Options{Python: python, SDKDir: sdk, Conn: workerproto.NewAgentConn(inR, outW)})
	h := &agentHarness{conn: workerproto.NewConn(pipeStream{Reader: outR, w: inW}), done: make(chan error, 1), hangUp: func() { inW.Close() }}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { h.done <- a.Run(ctx); outW.Close() }()
	t.Cleanup(func() {
		inW.Close()
		cancel()
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop")
		}
	})
	var log strings.Builder
	if _, err := h.conn.AwaitReady(ctx, func(o *atollv1.Output) { log.Write(o.GetData()) }); err != nil {
		t.Fatalf("agent not ready: %v (%s)", err, log.String())
	}
	return h, python
}

func TestAgentRunsCallsAndKeepsOutputAheadOfResults(t *testing.T) {
	h, python := startAgent(t)
	printFn := pickled(t, python, "print")
	for i := range 5 {
		res, out, err := h.call(t, printFn, pickled(t, python, "(('line', "+strings.Repeat("'x',", i*1000)+"), {})"))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := res.GetValue(), emptyManifest+"\x80\x05N."; string(got) != want { // cloudpickle of None
			t.Fatalf("value = %q, want %q (result %v)", got, want, res)
		}
		if want := "line" + strings.Repeat(" x", i*1000) + "\n"; out != want {
			t.Fatalf("call %d: output before result = %q, want %q", i, out, want)
		}
	}
}

func TestAgentReportsExceptions(t *testing.T) {
	h, python := startAgent(t)
	res, _, err := h.call(t, pickled(t, python, "int"), pickled(t, python, "(('nope',), {})"))
	exc := res.GetException()
	if err != nil || exc == nil || exc.GetTypeName() != "builtins.ValueError" || !strings.Contains(exc.GetMessage(), "nope") {
		t.Fatalf("result = %v, %v, want a ValueError", res, err)
	}
}

func TestAgentReportsRunnerDeath(t *testing.T) {
	h, python := startAgent(t)
	_, _, err := h.call(t, pickled(t, python, "__import__('os')._exit"), pickled(t, python, "((7,), {})"))
	var fe *workerproto.FailureError
	if !errors.As(err, &fe) || fe.Failure.GetKind() != atollv1.FailureKind_FAILURE_KIND_WORKER_CRASHED || fe.Failure.GetExitCode() != 7 {
		t.Fatalf("error = %v, want a crash with exit code 7", err)
	}
}

func TestAgentPassesLargeValuesThrough(t *testing.T) {
	h, python := startAgent(t)
	const size = 32 << 20
	res, _, err := h.call(t, pickled(t, python, "bytes"), pickled(t, python, fmt.Sprintf("((%d,), {})", size)))
	if err != nil || res.GetValue() == nil {
		t.Fatalf("result = %v, %v, want a value", res, err)
	}
	if got := len(res.GetValue()); got < size {
		t.Fatalf("value of %d bytes, want at least %d", got, size)
	}
}

// TestRunnerBacksLargeValuesWithHugePages: the runner's malloc maps a
// large value in transparent huge pages (see hugePages), where the host
// gives them to memory that asks.
func TestRunnerBacksLargeValuesWithHugePages(t *testing.T) {
	thp, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || strings.Contains(string(thp), "[never]") {
		t.Skipf("this host gives no transparent huge pages (%q, %v)", thp, err)
	}
	h, python := startAgent(t)
	// A 64 MiB bytes written through, then the process's own count of
	// anonymous memory in huge pages, in kB.
	fn := cloudpickled(t, python, `lambda: (lambda b: print([l for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages")][0].split()[1]))(b"x" * (64 << 20))`)
	_, out, err := h.call(t, fn, pickled(t, python, "((), {})"))
	if err != nil {
		t.Fatal(err)
	}
	kb, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	t.Logf("AnonHugePages with a 64 MiB value: %d kB", kb)
	if kb < 32<<10 {
		t.Errorf("%d kB of the runner's memory in huge pages, want most of the 64 MiB value's", kb)
	}
}

func TestRunnerEnvKeepsTunablesSetAlready(t *testing.T) {
	if got := runnerEnv([]string{"A=1"}); !slices.Equal(got, []string{"A=1", "GLIBC_TUNABLES=" + hugePages}) {
		t.Errorf("runnerEnv = %q", got)
	}
	own := []string{"GLIBC_TUNABLES=glibc.malloc.arena_max=2", "A=1"}
	if got := runnerEnv(own); !slices.Equal(got, own) {
		t.Errorf("runnerEnv with GLIBC_TUNABLES set = %q, want it unchanged", got)
	}
}
