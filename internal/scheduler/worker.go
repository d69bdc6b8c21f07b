package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/wire"
)

// startupLogLimit bounds the output kept from a worker that fails to start.
const startupLogLimit = 8 << 10

// Worker is one started worker: an agent with its runner, serving one call
// at a time.
type Worker struct {
	ID        string
	Key       PoolKey
	RunnerPID int
	Started   time.Time

	proc   Process
	ended  func()
	out    *wire.Writer
	events chan *atollv1.WorkerEvent

	exitOnce sync.Once
	exited   chan struct{}
	reaped   chan struct{}
	exit     Exit
	exitErr  error

	// Guarded by the scheduler's mutex.
	idle     bool
	idleGen  uint64
	lastUsed time.Time
	dead     bool
}

func newWorker(id string, key PoolKey, proc Process) *Worker {
	w := &Worker{
		ID:      id,
		Key:     key,
		Started: time.Now(),
		proc:    proc,
		out:     wire.NewWriter(proc.Conn()),
		events:  make(chan *atollv1.WorkerEvent, 64),
		exited:  make(chan struct{}),
		reaped:  make(chan struct{}),
	}
	go w.readEvents()
	return w
}

// readEvents turns the agent's stream into events; a value's raw bytes are
// read in with it and delivered as a Result.
func (w *Worker) readEvents() {
	defer close(w.events)
	in := wire.NewReader(w.proc.Conn())
	for {
		ev := new(atollv1.WorkerEvent)
		if err := in.Read(ev); err != nil {
			return
		}
		if v := ev.GetValue(); v != nil {
			value := make([]byte, v.GetSize())
			if _, err := io.ReadFull(in.Raw(int64(len(value))), value); err != nil {
				return
			}
			ev = &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Result{Result: &atollv1.Result{Outcome: &atollv1.Result_Value{Value: value}}}}
		}
		w.events <- ev
	}
}

// wait reaps the process once; later callers get the same answer.
func (w *Worker) wait() (Exit, error) {
	w.exitOnce.Do(func() {
		w.exit, w.exitErr = w.proc.Wait()
		close(w.exited)
	})
	<-w.exited
	return w.exit, w.exitErr
}

// awaitReady waits for the agent's ready event, keeping any output it wrote
// while starting for the error message.
func (w *Worker) awaitReady(ctx context.Context) error {
	var log strings.Builder
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-w.events:
			if !ok {
				return w.crashed(fmt.Sprintf("the worker exited while starting%s", logSuffix(log.String())))
			}
			switch e := ev.Event.(type) {
			case *atollv1.WorkerEvent_Ready:
				w.RunnerPID = int(e.Ready.GetRunnerPid())
				return nil
			case *atollv1.WorkerEvent_Output:
				if log.Len() < startupLogLimit {
					log.Write(e.Output.GetData())
				}
			case *atollv1.WorkerEvent_Failure:
				return w.failed(e.Failure, logSuffix(log.String()))
			}
		}
	}
}

func logSuffix(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return ":\n" + s
}

// Call runs one call of the serialized function fn with the serialized
// arguments args on the worker. Output events go to onOutput as they arrive.
// It returns the result, or an error: *CrashError when the worker died,
// ctx's error when ctx ended (the worker is then killed, since a Python call
// cannot be interrupted safely).
func (w *Worker) Call(ctx context.Context, fn, args []byte, onOutput func(*atollv1.Output)) (*atollv1.Result, error) {
	if err := ctx.Err(); err != nil {
		_ = w.proc.Kill()
		return nil, err
	}
	head := &atollv1.WorkerCall{FunctionSize: uint64(len(fn)), ArgumentsSize: uint64(len(args))}
	err := w.out.WriteWith(head, func(out io.Writer) error {
		if _, err := out.Write(fn); err != nil {
			return err
		}
		_, err := out.Write(args)
		return err
	})
	if err != nil {
		if errors.Is(err, io.ErrClosedPipe) || errors.Is(err, io.EOF) {
			return nil, w.crashed("the worker was gone before the call started")
		}
		return nil, w.crashed(fmt.Sprintf("could not send the call to the worker: %v", err))
	}
	for {
		select {
		case <-ctx.Done():
			_ = w.proc.Kill()
			return nil, ctx.Err()
		case ev, ok := <-w.events:
			if !ok {
				return nil, w.crashed("the worker died during the call")
			}
			switch e := ev.Event.(type) {
			case *atollv1.WorkerEvent_Output:
				onOutput(e.Output)
			case *atollv1.WorkerEvent_Result:
				return e.Result, nil
			case *atollv1.WorkerEvent_Failure:
				if e.Failure.GetKind() == atollv1.FailureKind_FAILURE_KIND_SERIALIZATION {
					return nil, &SerializationError{Message: e.Failure.GetMessage()}
				}
				return nil, w.failed(e.Failure, "")
			}
		}
	}
}

// failed turns an agent-reported failure into a CrashError, once the process
// has ended (so an OOM kill is known).
func (w *Worker) failed(f *atollv1.Failure, suffix string) error {
	_ = w.proc.Kill()
	exit, _ := w.wait()
	ce := &CrashError{WorkerID: w.ID, Exit: Exit{Code: int(f.GetExitCode()), Signal: int(f.GetSignal()), OOMKilled: exit.OOMKilled}, Message: f.GetMessage() + suffix}
	return ce
}

func (w *Worker) crashed(msg string) error {
	_ = w.proc.Kill()
	exit, err := w.wait()
	if err != nil {
		msg = fmt.Sprintf("%s (%v)", msg, err)
	}
	return &CrashError{WorkerID: w.ID, Exit: exit, Message: msg}
}

// stop ends the worker: closing its input asks the agent to exit, and Kill
// makes sure of it.
func (w *Worker) stop() {
	_ = w.proc.Conn().Close()
	_ = w.proc.Kill()
	_, _ = w.wait()
}
