package scheduler

import (
	"context"
	"time"

	"github.com/atoll-dev/atoll/internal/machine"
)

// waiter is a call of one pool waiting for room: capacity to start a
// worker of its own, or a worker of its pool that another call released.
// A released worker is handed over through ch (buffered, so the handing
// side never blocks), under the scheduler's mutex.
type waiter struct {
	ch    chan *worker
	since time.Time
	// ctx bounds every wait of the call; a hand-over or Shutdown ends it.
	ctx    context.Context
	cancel context.CancelFunc
}

// handOffLocked gives w, just released by its call, to the
// longest-waiting call of its pool, and reports whether one took it. A
// warm worker serves the next call at its warm speed; tearing it down to
// start another for the same pool would cost a cold start for nothing.
// A call of another pool that has waited longer goes first, though: w is
// then not handed over (and Release tears it down to make room), so that
// a busy pool cannot starve the others.
func (s *Scheduler) handOffLocked(w *worker) bool {
	queue := s.waiters[w.key]
	if len(queue) == 0 {
		return false
	}
	for key, other := range s.waiters {
		if key != w.key && other[0].since.Before(queue[0].since) {
			return false
		}
	}
	next := queue[0]
	s.setWaitersLocked(w.key, queue[1:])
	w.lastUsed = time.Now()
	next.ch <- w
	next.cancel()
	return true
}

// othersWaitLocked says a call of a pool other than key's is in line.
func (s *Scheduler) othersWaitLocked(key PoolKey) bool {
	for k, queue := range s.waiters {
		if k != key && len(queue) > 0 {
			return true
		}
	}
	return false
}

func (s *Scheduler) setWaitersLocked(key PoolKey, queue []*waiter) {
	if len(queue) == 0 {
		delete(s.waiters, key)
		return
	}
	s.waiters[key] = queue
}

func (s *Scheduler) removeWaiterLocked(key PoolKey, wt *waiter) {
	queue := s.waiters[key]
	for i, x := range queue {
		if x == wt {
			s.setWaitersLocked(key, append(queue[:i:i], queue[i+1:]...))
			return
		}
	}
}

// enlist puts a call of key's pool in line for a worker, its waits bounded
// by ctx, or returns an idle worker of the pool (own) if one went idle
// since the call looked. The call must settle the waiter.
func (s *Scheduler) enlist(ctx context.Context, key PoolKey) (own *worker, wt *waiter, err error) {
	wctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		cancel()
		return nil, nil, ErrClosed
	}
	if own = s.takeIdleLocked(key); own != nil {
		cancel()
		return own, nil, nil
	}
	wt = &waiter{ch: make(chan *worker, 1), since: time.Now(), ctx: wctx, cancel: cancel}
	s.waiters[key] = append(s.waiters[key], wt)
	return nil, wt, nil
}

// settle takes wt out of line once its wait has ended with g or err. A
// worker handed over meanwhile wins: the grant, if any, is given back.
func (s *Scheduler) settle(key PoolKey, wt *waiter, g *machine.Grant, err error) (*machine.Grant, *worker, error) {
	s.mu.Lock()
	s.removeWaiterLocked(key, wt)
	var w *worker
	select {
	case w = <-wt.ch:
	default:
	}
	closed := s.closed
	s.mu.Unlock()
	wt.cancel()
	switch {
	case w != nil:
		if g != nil {
			g.Release()
		}
		return nil, w, nil
	case closed:
		if g != nil {
			g.Release()
		}
		return nil, nil, ErrClosed
	}
	return g, nil, err
}

// cancelWaitersLocked ends the wait of every call in line (Shutdown).
func (s *Scheduler) cancelWaitersLocked() {
	for _, queue := range s.waiters {
		for _, wt := range queue {
			wt.cancel()
		}
	}
}
