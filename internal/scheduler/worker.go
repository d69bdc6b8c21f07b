package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// startupLogLimit bounds the output kept from a worker that fails to start.
const startupLogLimit = 8 << 10

// worker is the scheduler's record of one started worker: its process, its
// protocol connection and where it stands in its pool.
type worker struct {
	id        string
	key       PoolKey
	runnerPID int
	started   time.Time

	proc Process
	conn *workerproto.Conn // nil until the worker has connected
	// log names the worker and its account: what a hostile worker did is
	// the operator's to see, tagged with whose code it was.
	log   *slog.Logger
	ended func()

	// cut is set when the server's shutdown kills the worker: its call
	// failed because the server is stopping, not because the worker died.
	cut atomic.Bool

	exitOnce sync.Once
	exited   chan struct{}
	reaped   chan struct{}
	exit     Exit
	exitErr  error

	// Guarded by the scheduler's mutex.
	idle     bool
	lastUsed time.Time
	dead     bool
	// expiry tears the worker down once idle past expiresAt, the end of
	// the keep_alive its last call asked for; nil until first released.
	expiry    *time.Timer
	expiresAt time.Time
}

func newWorker(id string, key PoolKey, proc Process, log *slog.Logger) *worker {
	return &worker{
		id:      id,
		key:     key,
		log:     log.With("worker", id, "account", key.Account, "function", key.Function),
		started: time.Now(),
		proc:    proc,
		exited:  make(chan struct{}),
		reaped:  make(chan struct{}),
	}
}

// wait reaps the process once; later callers get the same answer.
func (w *worker) wait() (Exit, error) {
	w.exitOnce.Do(func() {
		w.exit, w.exitErr = w.proc.Wait()
		close(w.exited)
	})
	<-w.exited
	return w.exit, w.exitErr
}

// connect waits for the worker's connection and its ready event.
func (w *worker) connect(ctx context.Context) error {
	conn, err := w.proc.Conn(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return w.crashed(fmt.Sprintf("the worker never connected: %v", err))
	}
	w.conn = conn
	var startLog strings.Builder
	ready, err := conn.AwaitReady(ctx, func(o *atollv1.Output) {
		if room := startupLogLimit - startLog.Len(); room > 0 {
			startLog.Write(o.GetData()[:min(len(o.GetData()), room)])
		}
	})
	log := startLog.String()
	var fe *workerproto.FailureError
	switch {
	case err == nil:
		w.runnerPID = ready.RunnerPID
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &fe):
		return w.failed(fe.Failure, logSuffix(log))
	case errors.Is(err, workerproto.ErrProtocol):
		w.log.Warn("worker broke the protocol while starting; killing it", "err", err)
		return w.crashed(fmt.Sprintf("the worker broke the protocol while starting: %v%s", err, logSuffix(log)))
	}
	return w.crashed("the worker exited while starting" + logSuffix(log))
}

func logSuffix(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return ":\n" + s
}

// call runs one call on the worker; see Lease.Call.
func (w *worker) call(ctx context.Context, req workerproto.Request) (*atollv1.Result, error) {
	res, err := w.conn.CallWith(ctx, req)
	if err == nil {
		return res, nil
	}
	var fe *workerproto.FailureError
	switch {
	case ctx.Err() != nil:
		_ = w.proc.Kill()
		return nil, ctx.Err()
	case w.cut.Load():
		_ = w.proc.Kill()
		return nil, fmt.Errorf("%w: the call was still running when the shutdown grace period ended", ErrClosed)
	case errors.As(err, &fe) && fe.Failure.GetKind() == atollv1.FailureKind_FAILURE_KIND_SERIALIZATION:
		return nil, &SerializationError{Message: fe.Failure.GetMessage()}
	case errors.As(err, &fe):
		return nil, w.failed(fe.Failure, "")
	case errors.Is(err, workerproto.ErrProtocol):
		w.log.Warn("worker broke the protocol during a call; killing it", "err", err)
		return nil, w.crashed(fmt.Sprintf("the worker broke the protocol: %v", err))
	case errors.Is(err, workerproto.ErrClosed):
		return nil, w.crashed("the worker died during the call")
	}
	return nil, w.crashed(fmt.Sprintf("the call could not run: %v", err))
}

// failed turns an agent-reported failure into a CrashError, once the process
// has ended (so an OOM kill is known).
func (w *worker) failed(f *atollv1.Failure, suffix string) error {
	_ = w.proc.Kill()
	exit, _ := w.wait()
	return &CrashError{WorkerID: w.id, Exit: Exit{Code: int(f.GetExitCode()), Signal: int(f.GetSignal()), OOMKilled: exit.OOMKilled}, Message: f.GetMessage() + suffix}
}

func (w *worker) crashed(msg string) error {
	_ = w.proc.Kill()
	exit, err := w.wait()
	if err != nil {
		msg = fmt.Sprintf("%s (%v)", msg, err)
	}
	return &CrashError{WorkerID: w.id, Exit: exit, Message: msg}
}

// stop ends the worker: closing its connection asks the agent to exit, and
// Kill makes sure of it.
func (w *worker) stop() {
	if w.conn != nil {
		_ = w.conn.Close()
	}
	_ = w.proc.Kill()
	_, _ = w.wait()
}

// Lease is a worker reserved for one caller, from Acquire until Release or
// Discard; it is spent then, and a spent lease's Call fails with
// ErrLeaseSpent, never reaching a worker that now serves someone else.
type Lease struct {
	w *worker
}

// WorkerID names the leased worker.
func (l *Lease) WorkerID() string { return l.w.id }

// Call runs one call of the serialized function fn with the serialized
// arguments args on the leased worker. Output events go to onOutput as
// they arrive. It returns the result (a value or the raised exception), or
// an error: *SerializationError for a value that could not be serialized
// (the worker lives on), *CrashError when the worker died or broke the
// protocol, ctx's error when ctx ended (the worker is then killed, since a
// Python call cannot be interrupted safely).
func (l *Lease) Call(ctx context.Context, fn, args []byte, onOutput func(*atollv1.Output)) (*atollv1.Result, error) {
	return l.CallWith(ctx, workerproto.Request{Function: fn, Arguments: args, OnOutput: onOutput})
}

// CallWith is Call with everything a call may carry: its environment
// variables and a receiver for the values a generator yields.
func (l *Lease) CallWith(ctx context.Context, req workerproto.Request) (*atollv1.Result, error) {
	if l.w == nil {
		return nil, ErrLeaseSpent
	}
	return l.w.call(ctx, req)
}

// take spends the lease and returns its worker, or nil if it was spent.
func (l *Lease) take() *worker {
	w := l.w
	l.w = nil
	return w
}
