package server

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/state"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// pipeLauncher starts in-process agents over OS pipes that answer every
// call with its arguments: the server's whole per-call path (checks, pool,
// history, the worker protocol) with no process or sandbox behind it.
type pipeLauncher struct{}

type pipeProc struct {
	conn *workerproto.Conn
	done chan struct{}
}

type pipeRWC struct {
	r, w *os.File
}

func (p pipeRWC) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p pipeRWC) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p pipeRWC) Close() error {
	p.w.Close()
	return p.r.Close()
}

func (pipeLauncher) Start(_ context.Context, _ scheduler.WorkerSpec) (scheduler.Process, error) {
	callsR, callsW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	eventsR, eventsW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p := &pipeProc{conn: workerproto.NewConn(pipeRWC{r: eventsR, w: callsW}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer eventsW.Close()
		defer callsR.Close()
		c := workerproto.NewAgentConn(callsR, eventsW)
		if c.Send(&atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Ready{Ready: &atollv1.WorkerReady{RunnerPid: 1}}}) != nil {
			return
		}
		for {
			call, err := c.ReadCall()
			if err != nil {
				return
			}
			raw, err := io.ReadAll(c.Payload(call))
			if err != nil {
				return
			}
			args := raw[call.FunctionSize:]
			if c.SendValue(int64(len(args)), func(w io.Writer) error { _, err := w.Write(args); return err }) != nil {
				return
			}
		}
	}()
	return p, nil
}

func (p *pipeProc) Conn(context.Context) (*workerproto.Conn, error) { return p.conn, nil }
func (p *pipeProc) Wait() (scheduler.Exit, error)                   { <-p.done; return scheduler.Exit{}, nil }
func (p *pipeProc) Kill() error                                     { return p.conn.Close() }

type namedEnvironments struct{}

func (namedEnvironments) Key(*atollv1.Environment) (string, error) { return "env", nil }
func (namedEnvironments) Resolve(context.Context, *atollv1.Environment, func(string)) (Environment, error) {
	return Environment{Key: "env", Release: func() {}}, nil
}

// benchStream is the Run stream of one call, kept for the next.
type benchStream struct {
	grpc.ServerStream
	ctx  context.Context
	last *atollv1.RunEvent
}

func (s *benchStream) Context() context.Context       { return s.ctx }
func (s *benchStream) Send(e *atollv1.RunEvent) error { s.last = e; return nil }
func (s *benchStream) SetHeader(metadata.MD) error    { return nil }
func (s *benchStream) SendHeader(metadata.MD) error   { return nil }
func (s *benchStream) SetTrailer(metadata.MD)         {}

// BenchmarkWarmRun is the server's own cost of one warm call: Functions.Run
// from a decoded request to its result event, with the run history written
// to SQLite as the server does, and no gRPC transport.
func BenchmarkWarmRun(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	store, err := state.Open(ctx, filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.EnsureAccount(ctx, "alice"); err != nil {
		b.Fatal(err)
	}
	history := NewHistory(store, 0, nil)
	historyDone := make(chan struct{})
	go func() { history.Run(ctx); close(historyDone) }()
	sched := scheduler.New(scheduler.Options{Launcher: pipeLauncher{}})
	b.Cleanup(func() {
		_ = sched.Shutdown(context.Background())
		cancel()
		<-historyDone
		store.Close()
	})
	f := NewFunctions(Options{Catalog: machine.Defaults(), Environments: namedEnvironments{}, Scheduler: sched, History: history})
	req := &atollv1.RunRequest{
		Function: make([]byte, 2000), Arguments: []byte("x"), FunctionName: "f", MachineType: "XS", KeepAliveSeconds: 300,
		Environment: &atollv1.Environment{PythonVersion: "3.11"},
	}
	stream := &benchStream{ctx: auth.NewContext(ctx, auth.Principal{Account: "alice"})}
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Run(req, stream); err != nil {
			b.Fatal(err)
		}
		if string(stream.last.GetResult().GetValue()) != "x" {
			b.Fatalf("last event %v, want the result", stream.last)
		}
	}
}
