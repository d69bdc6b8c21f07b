package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protodelim"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeLauncher starts in-memory agents that answer every call with its
// arguments, or die when the arguments say "crash".
type fakeLauncher struct {
	started atomic.Int32
	mu      sync.Mutex
	procs   []*fakeProc
}

type fakeProc struct {
	conn     *workerproto.Conn
	server   net.Conn
	agent    net.Conn
	killOnce sync.Once
	done     chan struct{}
	exit     Exit
}

func (l *fakeLauncher) Start(_ context.Context, spec WorkerSpec) (Process, error) {
	n := l.started.Add(1)
	server, agent := net.Pipe()
	p := &fakeProc{conn: workerproto.NewConn(server), server: server, agent: agent, done: make(chan struct{})}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	go p.serve(int32(n))
	return p, nil
}

// serve is the in-memory agent: it speaks the real protocol's agent end.
func (p *fakeProc) serve(pid int32) {
	defer p.Kill()
	c := workerproto.NewAgentConn(p.agent, p.agent)
	if c.Send(&atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Ready{Ready: &atollv1.WorkerReady{RunnerPid: pid}}}) != nil {
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
		if string(args) == "crash" {
			p.exit = Exit{Code: 3}
			return
		}
		if string(args) == "forge" {
			// What user code that reaches the agent's stream can write
			// (the agent's own SendValue refuses such a size).
			forged := &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Value{Value: &atollv1.WorkerValue{Size: 1 << 62}}}
			_, _ = protodelim.MarshalTo(p.agent, forged)
			continue
		}
		_ = c.Send(&atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Output{Output: &atollv1.Output{Data: []byte("out")}}})
		_ = c.SendValue(int64(len(args)), func(w io.Writer) error { _, err := w.Write(args); return err })
	}
}

func (p *fakeProc) Conn(context.Context) (*workerproto.Conn, error) { return p.conn, nil }
func (p *fakeProc) Kill() error {
	p.killOnce.Do(func() {
		p.agent.Close()
		p.server.Close()
		close(p.done)
	})
	return nil
}
func (p *fakeProc) Wait() (Exit, error) { <-p.done; return p.exit, nil }

func newTestScheduler(t *testing.T) (*Scheduler, *fakeLauncher) {
	t.Helper()
	l := &fakeLauncher{}
	s := New(Options{Launcher: l})
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s, l
}

var key = PoolKey{Account: "a", Function: "f", EnvKey: "e", MachineType: "XS"}

func prepareCounting(n *atomic.Int32) Prepare {
	return func(context.Context) (WorkerSpec, func(), error) {
		n.Add(1)
		return WorkerSpec{Machine: machine.Type{Name: "XS"}}, nil, nil
	}
}

// leased returns the worker behind a live lease, to watch it after the
// lease is spent.
func leased(l *Lease) *worker { return l.w }

func call(t *testing.T, w *Lease, args string) (string, error) {
	t.Helper()
	var outputs int
	res, err := w.Call(context.Background(), []byte("fn"), []byte(args), func(*atollv1.Output) { outputs++ })
	if err != nil {
		return "", err
	}
	if outputs != 1 {
		t.Errorf("got %d output events, want 1", outputs)
	}
	return string(res.GetValue()), nil
}

func TestWarmWorkerIsReusedWithoutPreparing(t *testing.T) {
	s, l := newTestScheduler(t)
	var prepared atomic.Int32
	ctx := context.Background()
	w1, err := s.Acquire(ctx, key, prepareCounting(&prepared), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := call(t, w1, "x"); err != nil || got != "x" {
		t.Fatalf("call = %q, %v", got, err)
	}
	first := leased(w1)
	s.Release(w1, time.Minute)
	w2, err := s.Acquire(ctx, key, prepareCounting(&prepared), nil)
	if err != nil {
		t.Fatal(err)
	}
	if leased(w2) != first {
		t.Errorf("got a new worker, want the warm one")
	}
	if prepared.Load() != 1 || l.started.Load() != 1 {
		t.Errorf("prepared %d, started %d; want 1, 1", prepared.Load(), l.started.Load())
	}
	s.Release(w2, time.Minute)
}

func TestOtherPoolKeysGetOtherWorkers(t *testing.T) {
	s, l := newTestScheduler(t)
	var prepared atomic.Int32
	ctx := context.Background()
	tests := []struct {
		name string
		key  PoolKey
	}{
		{"base", key},
		{"other account", PoolKey{Account: "b", Function: "f", EnvKey: "e", MachineType: "XS"}},
		{"other function", PoolKey{Account: "a", Function: "g", EnvKey: "e", MachineType: "XS"}},
		{"other env", PoolKey{Account: "a", Function: "f", EnvKey: "e2", MachineType: "XS"}},
		{"other machine type", PoolKey{Account: "a", Function: "f", EnvKey: "e", MachineType: "M"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := s.Acquire(ctx, tt.key, prepareCounting(&prepared), nil)
			if err != nil {
				t.Fatal(err)
			}
			s.Release(w, time.Minute)
		})
	}
	if got := l.started.Load(); got != int32(len(tests)) {
		t.Errorf("started %d workers, want %d", got, len(tests))
	}
}

func TestBusyWorkerIsNotShared(t *testing.T) {
	s, l := newTestScheduler(t)
	var prepared atomic.Int32
	ctx := context.Background()
	w1, _ := s.Acquire(ctx, key, prepareCounting(&prepared), nil)
	w2, _ := s.Acquire(ctx, key, prepareCounting(&prepared), nil)
	if leased(w1) == leased(w2) || l.started.Load() != 2 {
		t.Fatalf("concurrent acquires shared a worker (started %d)", l.started.Load())
	}
	s.Release(w1, time.Minute)
	s.Release(w2, time.Minute)
}

func TestKeepAliveExpiryTearsDown(t *testing.T) {
	s, _ := newTestScheduler(t)
	var prepared atomic.Int32
	w, _ := s.Acquire(context.Background(), key, prepareCounting(&prepared), nil)
	ww := leased(w)
	s.Release(w, 50*time.Millisecond)
	select {
	case <-ww.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("worker still alive after keep_alive")
	}
	waitFor(t, func() bool { return len(s.Workers()) == 0 })
}

func TestReacquireStopsTheTimer(t *testing.T) {
	s, _ := newTestScheduler(t)
	var prepared atomic.Int32
	ctx := context.Background()
	w, _ := s.Acquire(ctx, key, prepareCounting(&prepared), nil)
	s.Release(w, 100*time.Millisecond)
	w2, _ := s.Acquire(ctx, key, prepareCounting(&prepared), nil)
	time.Sleep(300 * time.Millisecond)
	if got, err := call(t, w2, "still here"); err != nil || got != "still here" {
		t.Fatalf("busy worker expired: %q, %v", got, err)
	}
	s.Release(w2, time.Minute)
}

// Each release sets the worker's keep_alive anew, on the one timer the
// worker has: the first release's short keep_alive must not end it while
// the second's runs, and a short one after a long one still ends it soon.
func TestLaterReleaseMovesTheExpiry(t *testing.T) {
	s, _ := newTestScheduler(t)
	var prepared atomic.Int32
	ctx := context.Background()
	w, _ := s.Acquire(ctx, key, prepareCounting(&prepared), nil)
	ww := leased(w)
	s.Release(w, 50*time.Millisecond)
	w2, _ := s.Acquire(ctx, key, prepareCounting(&prepared), nil)
	s.Release(w2, time.Hour)
	time.Sleep(200 * time.Millisecond)
	select {
	case <-ww.exited:
		t.Fatal("worker ended at the first release's keep_alive")
	default:
	}
	w3, _ := s.Acquire(ctx, key, prepareCounting(&prepared), nil)
	if leased(w3) != ww || prepared.Load() != 1 {
		t.Fatalf("a new worker was started (prepared %d)", prepared.Load())
	}
	s.Release(w3, 50*time.Millisecond)
	select {
	case <-ww.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("worker still alive after the last release's keep_alive")
	}
}

func TestZeroKeepAliveDiscards(t *testing.T) {
	s, l := newTestScheduler(t)
	var prepared atomic.Int32
	ctx := context.Background()
	w, _ := s.Acquire(ctx, key, prepareCounting(&prepared), nil)
	ww := leased(w)
	s.Release(w, 0)
	<-ww.exited
	w2, _ := s.Acquire(ctx, key, prepareCounting(&prepared), nil)
	if leased(w2) == ww || l.started.Load() != 2 {
		t.Fatal("keep_alive 0 kept the worker")
	}
	s.Release(w2, 0)
}

func TestCrashIsReportedAndWorkerForgotten(t *testing.T) {
	s, _ := newTestScheduler(t)
	var prepared atomic.Int32
	w, _ := s.Acquire(context.Background(), key, prepareCounting(&prepared), nil)
	_, err := call(t, w, "crash")
	var crash *CrashError
	if !errors.As(err, &crash) || crash.Exit.Code != 3 {
		t.Fatalf("err = %v, want CrashError with code 3", err)
	}
	s.Discard(w)
	waitFor(t, func() bool { return len(s.Workers()) == 0 })
}

func TestProtocolViolationIsACrashLoggedWithWorkerAndAccount(t *testing.T) {
	var logs syncBuffer
	s := New(Options{Launcher: &fakeLauncher{}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer s.Shutdown(context.Background())
	var prepared atomic.Int32
	w, err := s.Acquire(context.Background(), key, prepareCounting(&prepared), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := w.WorkerID()
	_, err = call(t, w, "forge")
	var crash *CrashError
	if !errors.As(err, &crash) || !strings.Contains(crash.Message, "protocol violation") {
		t.Fatalf("err = %v, want a CrashError naming the protocol violation", err)
	}
	s.Discard(w)
	waitFor(t, func() bool { return len(s.Workers()) == 0 })
	if want := "worker=" + id + " account=a"; !strings.Contains(logs.String(), want) {
		t.Errorf("log %q does not name %q", logs.String(), want)
	}
}

// syncBuffer is a bytes.Buffer safe for the scheduler's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func TestCancelledCallKillsTheWorker(t *testing.T) {
	s, _ := newTestScheduler(t)
	var prepared atomic.Int32
	w, _ := s.Acquire(context.Background(), key, prepareCounting(&prepared), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w.Call(ctx, []byte("fn"), []byte("x"), func(*atollv1.Output) {}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	<-leased(w).exited
	s.Discard(w)
}

func TestPrepareErrorStartsNothing(t *testing.T) {
	s, l := newTestScheduler(t)
	boom := errors.New("build failed")
	_, err := s.Acquire(context.Background(), key, func(context.Context) (WorkerSpec, func(), error) {
		return WorkerSpec{}, nil, boom
	}, nil)
	if !errors.Is(err, boom) || l.started.Load() != 0 {
		t.Fatalf("err = %v, started = %d", err, l.started.Load())
	}
}

func TestEndedRunsWhenTheWorkerEnds(t *testing.T) {
	s, _ := newTestScheduler(t)
	ended := make(chan struct{})
	w, err := s.Acquire(context.Background(), key, func(context.Context) (WorkerSpec, func(), error) {
		return WorkerSpec{}, func() { close(ended) }, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Release(w, 0)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("ended was not called")
	}
}

func TestShutdownRefusesNewWork(t *testing.T) {
	l := &fakeLauncher{}
	s := New(Options{Launcher: l})
	var prepared atomic.Int32
	w, _ := s.Acquire(context.Background(), key, prepareCounting(&prepared), nil)
	ww := leased(w)
	s.Release(w, time.Hour)
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-ww.exited
	if _, err := s.Acquire(context.Background(), key, prepareCounting(&prepared), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newCappedScheduler(t *testing.T, cpus float64, queue time.Duration) *Scheduler {
	t.Helper()
	c := machine.NewCapacity(machine.Host{CPUs: cpus, MemoryBytes: 64 * machine.GiB})
	s := New(Options{Launcher: &fakeLauncher{}, Capacity: c, QueueTimeout: queue})
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s
}

func prepareXS(context.Context) (WorkerSpec, func(), error) {
	return WorkerSpec{Machine: machine.Type{Name: "XS", CPUs: 0.25, MemoryBytes: 256 * machine.MiB}}, nil, nil
}

func TestIdleWorkersMakeRoomLeastRecentlyUsedFirst(t *testing.T) {
	s := newCappedScheduler(t, 0.5, time.Second) // room for two XS workers
	ctx := context.Background()
	keyA, keyB, keyC := key, key, key
	keyA.Function, keyB.Function, keyC.Function = "a", "b", "c"
	a, err := s.Acquire(ctx, keyA, prepareXS, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Acquire(ctx, keyB, prepareXS, nil)
	if err != nil {
		t.Fatal(err)
	}
	wa, wb := leased(a), leased(b)
	s.Release(a, time.Hour)
	time.Sleep(10 * time.Millisecond)
	s.Release(b, time.Hour)

	queued := false
	c, err := s.Acquire(ctx, keyC, prepareXS, func() { queued = true })
	if err != nil {
		t.Fatal(err)
	}
	if queued {
		t.Error("the call queued although an idle worker could make room")
	}
	select {
	case <-wa.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the least recently used idle worker was not torn down")
	}
	if b2, _ := s.Acquire(ctx, keyB, prepareXS, nil); leased(b2) != wb {
		t.Error("the more recently used idle worker was torn down instead")
	} else {
		s.Release(b2, 0)
	}
	s.Release(c, 0)
}

func TestFullHostQueuesThenFailsWithNoCapacity(t *testing.T) {
	s := newCappedScheduler(t, 0.25, 100*time.Millisecond) // room for one XS worker
	ctx := context.Background()
	busy, err := s.Acquire(ctx, key, prepareXS, nil)
	if err != nil {
		t.Fatal(err)
	}
	queued := false
	other := key
	other.Function = "other"
	_, err = s.Acquire(ctx, other, prepareXS, func() { queued = true })
	if !errors.Is(err, machine.ErrNoCapacity) || !queued {
		t.Fatalf("err = %v, queued = %v; want ErrNoCapacity after queueing", err, queued)
	}
	s.Release(busy, 0)
	w, err := s.Acquire(ctx, other, prepareXS, nil)
	if err != nil {
		t.Fatalf("after the busy worker ended: %v", err)
	}
	s.Release(w, 0)
}

// fakeTokens records the tokens the scheduler issues and revokes.
type fakeTokens struct {
	mu      sync.Mutex
	issued  map[string]string // worker -> account
	revoked []string
}

func (f *fakeTokens) IssueWorkerToken(account, workerID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.issued[workerID] = account
	return "token-" + workerID
}

func (f *fakeTokens) RevokeWorkerToken(workerID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, workerID)
}

// recordingLauncher notes the specs it starts.
type recordingLauncher struct {
	fakeLauncher
	specs chan WorkerSpec
}

func (l *recordingLauncher) Start(ctx context.Context, spec WorkerSpec) (Process, error) {
	l.specs <- spec
	return l.fakeLauncher.Start(ctx, spec)
}

func TestWorkersGetATokenRevokedWhenTheyEnd(t *testing.T) {
	tokens := &fakeTokens{issued: map[string]string{}}
	l := &recordingLauncher{specs: make(chan WorkerSpec, 1)}
	s := New(Options{Launcher: l, Tokens: tokens})
	defer s.Shutdown(context.Background())
	w, err := s.Acquire(context.Background(), key, prepareXS, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec := <-l.specs
	if spec.Account != key.Account || spec.Token != "token-"+spec.ID || tokens.issued[spec.ID] != key.Account {
		t.Fatalf("spec = %+v, issued %v; want the account's token for the worker", spec, tokens.issued)
	}
	ww := leased(w)
	s.Release(w, 0)
	<-ww.reaped
	tokens.mu.Lock()
	defer tokens.mu.Unlock()
	if !slices.Equal(tokens.revoked, []string{spec.ID}) {
		t.Errorf("revoked %v, want [%s]", tokens.revoked, spec.ID)
	}
}

func TestSpentLeaseReachesNoWorker(t *testing.T) {
	s, _ := newTestScheduler(t)
	var prepared atomic.Int32
	w, err := s.Acquire(context.Background(), key, prepareCounting(&prepared), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Release(w, time.Minute)
	if _, err := w.Call(context.Background(), []byte("fn"), []byte("x"), func(*atollv1.Output) {}); !errors.Is(err, ErrLeaseSpent) {
		t.Fatalf("Call on a released lease = %v, want ErrLeaseSpent", err)
	}
	s.Release(w, time.Minute) // a second release is a no-op
	s.Discard(w)
	if n := len(s.Workers()); n != 1 {
		t.Fatalf("%d workers, want the one warm worker", n)
	}
}

// gatedLauncher's starts wait for a token on open, counting how many are
// under way at once.
type gatedLauncher struct {
	fakeLauncher
	open           chan struct{}
	entered        atomic.Int32
	inFlight, most atomic.Int32
}

func (l *gatedLauncher) Start(ctx context.Context, spec WorkerSpec) (Process, error) {
	l.entered.Add(1)
	n := l.inFlight.Add(1)
	for {
		m := l.most.Load()
		if n <= m || l.most.CompareAndSwap(m, n) {
			break
		}
	}
	defer l.inFlight.Add(-1)
	<-l.open
	return l.fakeLauncher.Start(ctx, spec)
}

func TestParallelStartsTakeTurnsAndAWaitingStartCanBeCancelled(t *testing.T) {
	l := &gatedLauncher{open: make(chan struct{})}
	s := New(Options{Launcher: l, ParallelStarts: 2})
	s.startTurn = time.Hour // the starts below hold their turns until let go
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	const calls = 5
	errs := make(chan error, calls)
	for i := range calls {
		k := key
		k.Function = fmt.Sprintf("f%d", i) // a pool each: no worker is reused
		go func() {
			lease, err := s.Acquire(context.Background(), k, prepareXS, nil)
			if err == nil {
				s.Release(lease, time.Minute)
			}
			errs <- err
		}()
	}
	waitFor(t, func() bool { return l.entered.Load() == 2 })
	time.Sleep(100 * time.Millisecond) // the others had time to start, were they let
	if got := l.entered.Load(); got != 2 {
		t.Fatalf("%d starts under way with ParallelStarts 2", got)
	}

	// A call whose context ends while it waits its turn gives its place up.
	ctx, cancel := context.WithCancel(context.Background())
	var endedCalls atomic.Int32
	waiting := make(chan error, 1)
	go func() {
		_, err := s.Acquire(ctx, PoolKey{Account: "a", Function: "g", EnvKey: "e", MachineType: "XS"},
			func(context.Context) (WorkerSpec, func(), error) {
				return WorkerSpec{Machine: machine.Type{Name: "XS"}}, func() { endedCalls.Add(1) }, nil
			}, nil)
		waiting <- err
	}()
	cancel()
	if err := <-waiting; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled while waiting to start: %v", err)
	}
	if endedCalls.Load() != 1 {
		t.Fatalf("ended ran %d times for a start that never began, want 1", endedCalls.Load())
	}

	close(l.open)
	for range calls {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if l.entered.Load() != calls || l.most.Load() != 2 {
		t.Fatalf("%d starts, at most %d at once; want %d, at most 2", l.entered.Load(), l.most.Load(), calls)
	}
}

func TestAStartThatTakesTooLongGivesUpItsTurn(t *testing.T) {
	l := &gatedLauncher{open: make(chan struct{})}
	s := New(Options{Launcher: l, ParallelStarts: 1})
	s.startTurn = 20 * time.Millisecond
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	errs := make(chan error, 3)
	for i := range 3 {
		k := key
		k.Function = fmt.Sprintf("f%d", i)
		go func() {
			lease, err := s.Acquire(context.Background(), k, prepareXS, nil)
			if err == nil {
				s.Release(lease, time.Minute)
			}
			errs <- err
		}()
	}
	// No start finishes until open closes: all three began only because
	// each turn ran out.
	waitFor(t, func() bool { return l.entered.Load() == 3 })
	close(l.open)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
