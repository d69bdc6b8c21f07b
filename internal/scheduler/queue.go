package scheduler

import (
	"context"
	"slices"
	"sync"
)

// fairQueue decides which call that needs a new worker goes next. Each
// account has its own line, first come first served, and the lines take
// turns: one account's backlog delays another account's call by at most the
// one call served before it. An account at its cap of workers is passed
// over until one of its workers ends.
//
// The call holding the turn reserves capacity for its worker (waiting for
// it if need be) and then passes the turn on; only one call holds it at a
// time, so the order of the turns is the order capacity is granted in.
type fairQueue struct {
	// limit returns an account's cap of workers; 0 means none.
	limit func(account string) int

	mu    sync.Mutex
	lines map[string][]*ticket
	// order holds the accounts with a line, in the order their turns come.
	order []string
	// held says a call holds the turn.
	held bool
	// workers counts each account's workers, started or starting.
	workers map[string]int
}

type ticket struct {
	account string
	// ready is closed when the ticket gets the turn.
	ready chan struct{}
}

func newFairQueue(limit func(account string) int) *fairQueue {
	if limit == nil {
		limit = func(string) int { return 0 }
	}
	return &fairQueue{limit: limit, lines: make(map[string][]*ticket), workers: make(map[string]int)}
}

// wait returns once the caller holds the turn for account, calling queued
// first if it has to wait. The caller must then call pass exactly once. It
// fails with ctx's error when ctx ends first.
func (q *fairQueue) wait(ctx context.Context, account string, queued func()) error {
	t := &ticket{account: account, ready: make(chan struct{})}
	q.mu.Lock()
	if len(q.lines[account]) == 0 {
		q.order = append(q.order, account)
	}
	q.lines[account] = append(q.lines[account], t)
	q.dispatchLocked()
	q.mu.Unlock()

	select {
	case <-t.ready:
		return nil
	default:
	}
	if queued != nil {
		queued()
	}
	select {
	case <-t.ready:
		return nil
	case <-ctx.Done():
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case <-t.ready:
		// Given the turn as ctx ended: hand it on.
		q.passLocked(account, false)
	default:
		q.removeLocked(t)
	}
	return ctx.Err()
}

// pass ends the caller's turn; started says it reserved a worker for
// account, which counts against the account's cap until workerEnded.
func (q *fairQueue) pass(account string, started bool) {
	q.mu.Lock()
	q.passLocked(account, started)
	q.mu.Unlock()
}

func (q *fairQueue) passLocked(account string, started bool) {
	if started {
		q.workers[account]++
	}
	q.held = false
	q.dispatchLocked()
}

// workerEnded gives back the place a worker of account held under its cap.
func (q *fairQueue) workerEnded(account string) {
	q.mu.Lock()
	if q.workers[account]--; q.workers[account] <= 0 {
		delete(q.workers, account)
	}
	q.dispatchLocked()
	q.mu.Unlock()
}

// atCap says account has as many workers as its cap allows.
func (q *fairQueue) atCap(account string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.atCapLocked(account)
}

func (q *fairQueue) atCapLocked(account string) bool {
	limit := q.limit(account)
	return limit > 0 && q.workers[account] >= limit
}

// waiting counts the calls in line.
func (q *fairQueue) waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, line := range q.lines {
		n += len(line)
	}
	return n
}

// wants says a call in line would go sooner if a worker of account ended:
// one that waits for capacity, or one of account's at its cap.
func (q *fairQueue) wants(account string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for a, line := range q.lines {
		if len(line) > 0 && (a == account || !q.atCapLocked(a)) {
			return true
		}
	}
	return false
}

// dispatchLocked gives the turn, if nobody holds it, to the first call of
// the first account in order that is under its cap, and sends that account
// to the back of the order.
func (q *fairQueue) dispatchLocked() {
	if q.held {
		return
	}
	for i, account := range q.order {
		if q.atCapLocked(account) {
			continue
		}
		line := q.lines[account]
		t := line[0]
		q.order = slices.Delete(q.order, i, i+1)
		if len(line) == 1 {
			delete(q.lines, account)
		} else {
			q.lines[account] = line[1:]
			q.order = append(q.order, account)
		}
		q.held = true
		close(t.ready)
		return
	}
}

func (q *fairQueue) removeLocked(t *ticket) {
	line := slices.DeleteFunc(q.lines[t.account], func(x *ticket) bool { return x == t })
	if len(line) > 0 {
		q.lines[t.account] = line
		return
	}
	delete(q.lines, t.account)
	q.order = slices.DeleteFunc(q.order, func(a string) bool { return a == t.account })
}
