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
	return true
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

// awaitRoom waits, up to ctx, for whichever comes first: capacity for a
// worker of machine type t (a grant), or a worker of key's pool that a call
// released (handed over by handOff). Exactly one of the grant and the
// worker is returned without an error.
func (s *Scheduler) awaitRoom(ctx context.Context, key PoolKey, t machine.Type) (*machine.Grant, *worker, error) {
	wt := &waiter{ch: make(chan *worker, 1), since: time.Now()}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, ErrClosed
	}
	// A worker of the pool may have gone idle since the call looked.
	if w := s.takeIdleLocked(key); w != nil {
		s.mu.Unlock()
		return nil, w, nil
	}
	// Or one of another pool, which Release kept warm before this call
	// was in line: it makes room (its capacity comes back when it ends).
	evict := s.oldestIdleLocked()
	s.waiters[key] = append(s.waiters[key], wt)
	s.mu.Unlock()
	if evict != nil {
		go evict.stop()
	}

	type granted struct {
		g   *machine.Grant
		err error
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	grants := make(chan granted, 1)
	go func() {
		g, err := s.capacity.Acquire(actx, t)
		grants <- granted{g, err}
	}()
	var w *worker
	var got granted
	gotGrant, closed := false, false
	select {
	case w = <-wt.ch:
	case got = <-grants:
		gotGrant = true
	case <-s.closing:
		closed = true
	}
	cancel()
	s.mu.Lock()
	s.removeWaiterLocked(key, wt)
	if w == nil {
		select {
		case w = <-wt.ch: // handed over while the grant came
		default:
		}
	}
	s.mu.Unlock()
	if !gotGrant {
		got = <-grants // so that no grant is left held
	}
	if (w != nil || closed) && got.g != nil {
		got.g.Release()
		got.g = nil
	}
	switch {
	case w != nil:
		return nil, w, nil
	case closed:
		return nil, nil, ErrClosed
	}
	return got.g, nil, got.err
}
