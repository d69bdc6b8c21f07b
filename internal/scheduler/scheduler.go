// Package scheduler owns the warm pools: it leases a call an idle worker of
// the same pool or starts a new one through a Launcher, keeps released
// workers warm for their keep_alive, tears them down at expiry and accounts
// for their capacity; calls that need a new worker take turns across
// accounts, each account within its cap of workers (queue.go). It defines
// the launcher-neutral Launcher interface it needs (what to run, never how)
// and issues each worker's token through Tokens. It must not build environments, enforce limits, know host paths,
// speak gRPC or lay out the worker protocol (package workerproto does).
package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/atoll-dev/atoll/internal/machine"
)

// PoolKey identifies interchangeable workers: a warm worker only ever serves
// calls of the same account, function, environment and machine type.
type PoolKey struct {
	Account     string
	Function    string
	EnvKey      string
	MachineType string
}

// DefaultStartTimeout bounds how long a new worker may take to become ready.
const DefaultStartTimeout = 2 * time.Minute

// startTurn is the longest a start keeps its turn under
// Options.ParallelStarts: one that takes longer (a slow or hostile
// environment's interpreter that never gets ready) goes on beside the next,
// so that it cannot hold up other accounts' workers for its whole start
// timeout. A start takes about 0.1 s on an idle machine.
const startTurn = 250 * time.Millisecond

// DefaultQueueTimeout bounds how long a call waits for capacity.
const DefaultQueueTimeout = 2 * time.Minute

// Options configures a Scheduler.
type Options struct {
	Launcher Launcher
	// Tokens, if set, gives each worker a token for nested calls, valid
	// for its account while it lives.
	Tokens Tokens
	// Capacity admits workers; nil admits every worker.
	Capacity *machine.Capacity
	Logger   *slog.Logger
	// StartTimeout bounds a worker's start; 0 means DefaultStartTimeout.
	StartTimeout time.Duration
	// QueueTimeout bounds the wait for capacity; 0 means DefaultQueueTimeout.
	QueueTimeout time.Duration
	// MaxWorkers, if set, returns an account's cap of concurrent workers
	// (0: none). A call of an account at its cap waits for one of them.
	MaxWorkers func(account string) int
	// Observer, if set, is told how each lease was served.
	Observer Observer
	// ParallelStarts, if set, is how many workers may start at once; the
	// others wait their turn, capacity reserved. Where starting a worker
	// is CPU-bound on the server's machine (runc, the runner's Python),
	// more starts at once than it has CPUs only slow each other down: all
	// become ready late together, where in turns the first serve early.
	// A start keeps its turn for at most startTurn.
	ParallelStarts int
}

// Scheduler manages warm pools of workers.
type Scheduler struct {
	launcher     Launcher
	tokens       Tokens
	capacity     *machine.Capacity
	log          *slog.Logger
	startTimeout time.Duration
	queueTimeout time.Duration
	queue        *fairQueue
	observer     Observer
	starts       chan struct{} // a slot per start under way; nil: no limit
	startTurn    time.Duration // how long a start keeps its slot at most

	mu      sync.Mutex
	idle    map[PoolKey][]*worker
	waiters map[PoolKey][]*waiter
	workers map[string]*worker
	closed  bool
	wg      sync.WaitGroup
}

// New returns a scheduler that starts workers with opts.Launcher.
func New(opts Options) *Scheduler {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = DefaultStartTimeout
	}
	queueTimeout := opts.QueueTimeout
	if queueTimeout == 0 {
		queueTimeout = DefaultQueueTimeout
	}
	var starts chan struct{}
	if opts.ParallelStarts > 0 {
		starts = make(chan struct{}, opts.ParallelStarts)
	}
	return &Scheduler{
		starts:       starts,
		startTurn:    startTurn,
		launcher:     opts.Launcher,
		tokens:       opts.Tokens,
		capacity:     opts.Capacity,
		log:          log,
		startTimeout: timeout,
		queueTimeout: queueTimeout,
		queue:        newFairQueue(opts.MaxWorkers),
		observer:     opts.Observer,
		idle:         make(map[PoolKey][]*worker),
		waiters:      make(map[PoolKey][]*waiter),
		workers:      make(map[string]*worker),
	}
}

// Prepare readies what a new worker needs (its environment, built before
// capacity is taken, since a build may be slow) and returns what the worker
// is to run, plus a function to call once that worker has ended. The
// scheduler fills in the spec's ID, Account, Token and GPUs.
type Prepare func(ctx context.Context) (spec WorkerSpec, ended func(), err error)

// Acquire returns a worker for key that is reserved for the caller until
// Release or Discard: the most recently used idle one of the pool, or else a
// new one, started from the spec that prepare returns once capacity for its
// machine type is reserved. prepare is only called when no idle worker can
// serve, so a warm call does no preparation. queued, if not nil, is called
// when the call has to wait for capacity.
func (s *Scheduler) Acquire(ctx context.Context, key PoolKey, prepare Prepare, queued func()) (*Lease, error) {
	if w, err := s.takeIdle(key); w != nil || err != nil {
		if err != nil {
			return nil, err
		}
		if s.observer != nil {
			s.observer.WorkerLeased(key.MachineType, true, 0, 0)
		}
		return &Lease{w: w}, nil
	}
	spec, ended, err := prepare(ctx)
	if err != nil {
		return nil, err
	}
	reserving := time.Now()
	grant, handed, err := s.reserve(ctx, key, spec.Machine, queued)
	if err != nil || handed != nil {
		if ended != nil {
			ended()
		}
		if err != nil {
			return nil, err
		}
		if s.observer != nil {
			s.observer.WorkerLeased(key.MachineType, true, time.Since(reserving), 0)
		}
		return &Lease{w: handed}, nil
	}
	account := key.Account
	ended = releaseAlso(ended, func() { s.queue.workerEnded(account) })
	if grant != nil {
		spec.GPUs = grant.GPUs()
		ended = releaseAlso(ended, grant.Release)
	}
	starting := time.Now()
	w, err := s.start(ctx, key, spec, ended)
	if err != nil {
		return nil, err
	}
	if s.observer != nil {
		s.observer.WorkerLeased(key.MachineType, false, starting.Sub(reserving), time.Since(starting))
	}
	return &Lease{w: w}, nil
}

func releaseAlso(ended, release func()) func() {
	return func() {
		release()
		if ended != nil {
			ended()
		}
	}
}

// reserve takes a place for a new worker of key's pool, of type t: in turn
// with the other accounts' calls that wait (fairQueue), within the
// account's cap, and with t's capacity, which it takes at once if it is
// free, else by tearing down idle workers of other pools, least recently
// used first, else by waiting. The whole wait is bounded by the queue
// timeout. While the call waits, a worker of its pool that another call
// released is handed to it (handOffLocked) and returned instead of a grant.
// The grant is nil without a Capacity.
func (s *Scheduler) reserve(ctx context.Context, key PoolKey, t machine.Type, queued func()) (*machine.Grant, *worker, error) {
	queued = once(queued)
	account := key.Account
	if s.queue.atCap(account) {
		// Its own idle workers are what stands in its way.
		if w := s.oldestIdle(account); w != nil {
			s.log.Debug("evicting idle worker for the account's cap", "worker", w.id, "account", account)
			w.stop()
			s.awaitReaped(ctx, w)
		}
	}
	qctx, cancel := context.WithTimeout(ctx, s.queueTimeout)
	defer cancel()
	own, wt, err := s.enlist(qctx, key)
	if own != nil || err != nil {
		return nil, own, err // one of the pool's went idle since the call looked
	}
	turnErr := s.queue.wait(wt.ctx, account, queued)
	var g *machine.Grant
	err = turnErr
	if turnErr == nil {
		g, err = s.reserveCapacity(ctx, wt.ctx, t, queued)
	}
	g, handed, err := s.settle(key, wt, g, err)
	if turnErr == nil {
		s.queue.pass(account, err == nil && handed == nil)
	}
	if err == nil {
		return g, handed, nil
	}
	if turnErr != nil && ctx.Err() == nil && s.queue.atCap(account) {
		return nil, nil, fmt.Errorf("%w: account %s already runs its cap of %d workers, and none ended within %s",
			machine.ErrNoCapacity, account, s.queue.limit(account), s.queueTimeout)
	}
	return nil, nil, s.queueError(ctx, t, err)
}

// reserveCapacity is reserve's part once the call holds the turn: wctx is
// the waiter's context, which a hand-over ends.
func (s *Scheduler) reserveCapacity(ctx, wctx context.Context, t machine.Type, queued func()) (*machine.Grant, error) {
	if s.capacity == nil {
		return nil, nil
	}
	for {
		g, err := s.capacity.TryAcquire(t)
		if err == nil {
			return g, nil
		}
		if !errors.Is(err, machine.ErrNoCapacity) {
			return nil, err
		}
		// Under the mutex that hands workers over: once one was handed to
		// this call (or its wait ended), evicting an idle worker would
		// tear down a warm worker for a start nobody needs.
		s.mu.Lock()
		if err := wctx.Err(); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		w := s.oldestIdleLocked("")
		s.mu.Unlock()
		if w == nil {
			break
		}
		s.log.Debug("evicting idle worker for capacity", "worker", w.id, "machine_type", t.Name)
		w.stop()
		s.awaitReaped(ctx, w)
	}
	queued()
	return s.capacity.Acquire(wctx, t)
}

// queueError says why a call that waited for a worker gave up.
func (s *Scheduler) queueError(ctx context.Context, t machine.Type, err error) error {
	if ctx.Err() != nil || !(errors.Is(err, machine.ErrNoCapacity) || errors.Is(err, context.DeadlineExceeded)) {
		return err
	}
	used := "no capacity limit"
	if s.capacity != nil {
		used = s.capacity.Used().String()
	}
	return fmt.Errorf("%w: no room for machine type %s after waiting %s (in use: %s)",
		machine.ErrNoCapacity, t, s.queueTimeout, used)
}

// once returns f, called at most once; nil stays a no-op.
func once(f func()) func() {
	var o sync.Once
	return func() {
		if f != nil {
			o.Do(f)
		}
	}
}

// Waiting counts the calls waiting for a worker to start: in line for
// their turn, or holding it and waiting for capacity.
func (s *Scheduler) Waiting() int {
	n := s.queue.waiting()
	if s.capacity != nil {
		n += s.capacity.Waiting()
	}
	return n
}

// oldestIdle takes the least recently used idle worker (of account, or of
// any account when it is "") out of its pool.
func (s *Scheduler) oldestIdle(account string) *worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.oldestIdleLocked(account)
}

func (s *Scheduler) oldestIdleLocked(account string) *worker {
	var oldest *worker
	for key, pool := range s.idle {
		if account != "" && key.Account != account {
			continue
		}
		for _, w := range pool {
			if !w.dead && (oldest == nil || w.lastUsed.Before(oldest.lastUsed)) {
				oldest = w
			}
		}
	}
	if oldest != nil {
		s.removeIdleLocked(oldest)
	}
	return oldest
}

// awaitReaped waits until the scheduler has forgotten w, and so released
// what it held.
func (s *Scheduler) awaitReaped(ctx context.Context, w *worker) {
	select {
	case <-w.reaped:
	case <-ctx.Done():
	}
}

func (s *Scheduler) takeIdle(key PoolKey) (*worker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	return s.takeIdleLocked(key), nil
}

// takeIdleLocked takes the most recently used live idle worker of key's
// pool, or returns nil.
func (s *Scheduler) takeIdleLocked(key PoolKey) *worker {
	pool := s.idle[key]
	for len(pool) > 0 {
		w := pool[len(pool)-1]
		pool = pool[:len(pool)-1]
		if w.dead {
			continue
		}
		s.idle[key] = pool
		w.idle = false
		return w
	}
	delete(s.idle, key)
	return nil
}

// newWorkerID returns a new unique worker id, safe as a file name.
func newWorkerID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "w-" + hex.EncodeToString(b[:])
}

func (s *Scheduler) start(ctx context.Context, key PoolKey, spec WorkerSpec, ended func()) (*worker, error) {
	if s.starts != nil {
		select {
		case s.starts <- struct{}{}:
			// The turn ends once the worker is ready or failed, or after
			// startTurn, whichever is first.
			var once sync.Once
			give := func() { once.Do(func() { <-s.starts }) }
			turn := time.AfterFunc(s.startTurn, give)
			defer func() { turn.Stop(); give() }()
		case <-ctx.Done():
			if ended != nil {
				ended()
			}
			return nil, ctx.Err()
		}
	}
	spec.ID = newWorkerID()
	spec.Account = key.Account
	if s.tokens != nil {
		spec.Token = s.tokens.IssueWorkerToken(key.Account, spec.ID)
		id := spec.ID
		ended = releaseAlso(ended, func() { s.tokens.RevokeWorkerToken(id) })
	}
	ctx, cancel := context.WithTimeout(ctx, s.startTimeout)
	defer cancel()
	proc, err := s.launcher.Start(ctx, spec)
	if err != nil {
		if ended != nil {
			ended()
		}
		return nil, err
	}
	w := newWorker(spec.ID, key, proc, s.log)
	w.ended = ended
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		w.stop()
		if ended != nil {
			ended()
		}
		return nil, ErrClosed
	}
	s.workers[w.id] = w
	s.wg.Add(1)
	s.mu.Unlock()
	go s.reap(w)

	if err := w.connect(ctx); err != nil {
		s.discard(w)
		return nil, err // reap calls ended
	}
	if settler, ok := proc.(Settler); ok {
		if err := settler.Settle(); err != nil {
			s.discard(w)
			return nil, fmt.Errorf("apply the limits of machine type %s: %w", key.MachineType, err)
		}
	}
	s.log.Debug("worker started", "worker", w.id, "function", key.Function, "machine_type", key.MachineType, "took", time.Since(w.started))
	return w, nil
}

// reap forgets a worker once its process has ended, whatever ended it.
func (s *Scheduler) reap(w *worker) {
	defer s.wg.Done()
	exit, err := w.wait()
	s.mu.Lock()
	w.dead = true
	delete(s.workers, w.id)
	if w.idle {
		s.removeIdleLocked(w)
	}
	if w.expiry != nil {
		w.expiry.Stop()
	}
	s.mu.Unlock()
	if w.ended != nil {
		w.ended()
	}
	close(w.reaped)
	s.log.Debug("worker ended", "worker", w.id, "code", exit.Code, "signal", exit.Signal, "oom", exit.OOMKilled, "err", err)
}

func (s *Scheduler) removeIdleLocked(w *worker) {
	pool := s.idle[w.key]
	for i, x := range pool {
		if x == w {
			pool = append(pool[:i], pool[i+1:]...)
			break
		}
	}
	if len(pool) == 0 {
		delete(s.idle, w.key)
	} else {
		s.idle[w.key] = pool
	}
	w.idle = false
}

// Release returns a leased worker after a successful call. It stays warm
// for keepAlive, then is torn down; keepAlive <= 0 tears it down now. The
// lease is spent.
func (s *Scheduler) Release(l *Lease, keepAlive time.Duration) {
	w := l.take()
	if w == nil {
		return
	}
	if keepAlive <= 0 {
		s.discard(w)
		return
	}
	s.mu.Lock()
	if s.closed || w.dead {
		s.mu.Unlock()
		s.discard(w)
		return
	}
	if s.handOffLocked(w) {
		s.mu.Unlock()
		return
	}
	if s.othersWaitLocked(w.key) && ((s.capacity != nil && s.capacity.Waiting() > 0) || s.queue.wants(w.key.Account)) {
		// A call of another pool is waiting for room: a warm worker
		// would only hold it up. (Every call that waits for room is in
		// line in s.waiters until it settles; one already handed a
		// worker has left it but may still count among the capacity's
		// or the queue's waiters for a moment.)
		s.mu.Unlock()
		s.discard(w)
		return
	}
	w.idle = true
	w.lastUsed = time.Now()
	w.expiresAt = w.lastUsed.Add(keepAlive)
	s.idle[w.key] = append(s.idle[w.key], w)
	// One timer per worker, moved by every release: a timer per call would
	// pile up one per call for keep_alive (minutes) in the runtime's heap.
	if w.expiry == nil {
		w.expiry = time.AfterFunc(keepAlive, func() { s.expire(w) })
	} else {
		w.expiry.Reset(keepAlive)
	}
	s.mu.Unlock()
}

// expire tears w down if it is still idle at the end of its keep_alive. A
// firing that a later release overtook finds the worker busy or not yet
// due, and does nothing: that release moved the timer.
func (s *Scheduler) expire(w *worker) {
	s.mu.Lock()
	if !w.idle || time.Now().Before(w.expiresAt) {
		s.mu.Unlock()
		return
	}
	s.removeIdleLocked(w)
	s.mu.Unlock()
	s.log.Debug("keep_alive expired", "worker", w.id)
	w.stop()
}

// Discard tears a leased worker down (after a crash or a cancelled call)
// and spends the lease. It returns at once: the caller's answer need not
// wait for the teardown, and the worker's capacity is released when it has
// ended.
func (s *Scheduler) Discard(l *Lease) {
	if w := l.take(); w != nil {
		s.discard(w)
	}
}

func (s *Scheduler) discard(w *worker) {
	s.mu.Lock()
	if w.idle {
		s.removeIdleLocked(w)
	}
	s.mu.Unlock()
	go w.stop()
}

// DiscardIdle tears down the idle workers of account, whose caller has
// gone away (host=local: the calling process exited). Busy workers end
// with their calls, which the caller's departure cancels.
func (s *Scheduler) DiscardIdle(account string) {
	var gone []*worker
	s.mu.Lock()
	for key, pool := range s.idle {
		if key.Account == account {
			gone = append(gone, pool...)
		}
	}
	for _, w := range gone {
		s.removeIdleLocked(w)
	}
	s.mu.Unlock()
	for _, w := range gone {
		go w.stop()
	}
}

// WorkerInfo describes a live worker for status listings.
type WorkerInfo struct {
	ID        string
	Key       PoolKey
	RunnerPID int
	Idle      bool
	Started   time.Time
	LastUsed  time.Time
}

// Workers lists the live workers, oldest first.
func (s *Scheduler) Workers() []WorkerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]WorkerInfo, 0, len(s.workers))
	for _, w := range s.workers {
		out = append(out, WorkerInfo{ID: w.id, Key: w.key, RunnerPID: w.runnerPID, Idle: w.idle, Started: w.started, LastUsed: w.lastUsed})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}

// Shutdown tears down every worker and waits for them to end or ctx to
// pass. Acquire fails with ErrClosed afterwards.
func (s *Scheduler) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.cancelWaitersLocked()
	all := make([]*worker, 0, len(s.workers))
	for _, w := range s.workers {
		all = append(all, w)
	}
	s.idle = make(map[PoolKey][]*worker)
	s.mu.Unlock()
	for _, w := range all {
		w.cut.Store(true)
		go w.stop()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
