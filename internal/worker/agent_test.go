package worker

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/wire"
)

// pickled returns the standard pickle of a Python expression; the runner
// reads it with cloudpickle, which accepts any pickle.
func pickled(t *testing.T, python, expr string) []byte {
	t.Helper()
	out, err := exec.Command(python, "-c", "import pickle, sys; sys.stdout.buffer.write(pickle.dumps("+expr+"))").Output()
	if err != nil {
		t.Fatalf("pickle %s: %v", expr, err)
	}
	return out
}

type agentHarness struct {
	calls  *wire.Writer
	events *wire.Reader
	done   chan error
}

// call sends a call with its function and arguments as the raw bytes that
// follow its header.
func (h *agentHarness) call(t *testing.T, fn, args []byte) {
	t.Helper()
	head := &atollv1.WorkerCall{FunctionSize: uint64(len(fn)), ArgumentsSize: uint64(len(args))}
	err := h.calls.WriteWith(head, func(w io.Writer) error {
		if _, err := w.Write(fn); err != nil {
			return err
		}
		_, err := w.Write(args)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// value reads the raw bytes of a value event.
func (h *agentHarness) value(t *testing.T, ev *atollv1.WorkerEvent) []byte {
	t.Helper()
	b, err := io.ReadAll(h.events.Raw(int64(ev.GetValue().GetSize())))
	if err != nil {
		t.Fatal(err)
	}
	return b
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
	a := New(Options{Python: python, SDKDir: sdk, In: inR, Out: outW})
	h := &agentHarness{calls: wire.NewWriter(inW), events: wire.NewReader(outR), done: make(chan error, 1)}
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
	return h, python
}

func (h *agentHarness) next(t *testing.T) *atollv1.WorkerEvent {
	t.Helper()
	ev := new(atollv1.WorkerEvent)
	if err := h.events.Read(ev); err != nil {
		t.Fatalf("reading event: %v", err)
	}
	return ev
}

func TestAgentRunsCallsAndKeepsOutputAheadOfResults(t *testing.T) {
	h, python := startAgent(t)
	if h.next(t).GetReady() == nil {
		t.Fatal("first event is not ready")
	}
	printFn := pickled(t, python, "print")
	for i := range 5 {
		h.call(t, printFn, pickled(t, python, "(('line', "+strings.Repeat("'x',", i*1000)+"), {})"))
		var out strings.Builder
		for {
			ev := h.next(t)
			if o := ev.GetOutput(); o != nil {
				out.Write(o.GetData())
				continue
			}
			if ev.GetValue() == nil {
				t.Fatalf("unexpected event %v", ev)
			}
			if got, want := h.value(t, ev), "\x80\x05N."; string(got) != want { // cloudpickle of None
				t.Fatalf("value = %q, want %q", got, want)
			}
			break
		}
		if want := "line" + strings.Repeat(" x", i*1000) + "\n"; out.String() != want {
			t.Fatalf("call %d: output before result = %q, want %q", i, out.String(), want)
		}
	}
}

func TestAgentReportsExceptions(t *testing.T) {
	h, python := startAgent(t)
	h.next(t)
	h.call(t, pickled(t, python, "int"), pickled(t, python, "(('nope',), {})"))
	ev := h.next(t)
	exc := ev.GetResult().GetException()
	if exc == nil || exc.GetTypeName() != "builtins.ValueError" || !strings.Contains(exc.GetMessage(), "nope") {
		t.Fatalf("event = %v, want a ValueError", ev)
	}
}

func TestAgentReportsRunnerDeath(t *testing.T) {
	h, python := startAgent(t)
	h.next(t)
	h.call(t, pickled(t, python, "__import__('os')._exit"), pickled(t, python, "((7,), {})"))
	ev := h.next(t)
	f := ev.GetFailure()
	if f == nil || f.GetKind() != atollv1.FailureKind_FAILURE_KIND_WORKER_CRASHED || f.GetExitCode() != 7 {
		t.Fatalf("event = %v, want a crash with exit code 7", ev)
	}
}

func TestAgentPassesLargeValuesThrough(t *testing.T) {
	h, python := startAgent(t)
	h.next(t)
	const size = 32 << 20
	h.call(t, pickled(t, python, "bytes"), pickled(t, python, fmt.Sprintf("((%d,), {})", size)))
	ev := h.next(t)
	if ev.GetValue() == nil {
		t.Fatalf("event = %v, want a value", ev)
	}
	if got := len(h.value(t, ev)); got < size {
		t.Fatalf("value of %d bytes, want at least %d", got, size)
	}
}
