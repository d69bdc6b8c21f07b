package scheduler

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atoll-dev/atoll/internal/machine"
)

// enter starts a call of account waiting for its turn, and returns a channel
// that yields once it holds the turn. The wait ends with the test.
func enter(t *testing.T, q *fairQueue, account string) <-chan struct{} {
	t.Helper()
	got := make(chan struct{})
	queued := make(chan struct{})
	go func() {
		if err := q.wait(t.Context(), account, func() { close(queued) }); err == nil {
			close(got)
		}
	}()
	select {
	case <-queued:
	case <-got:
	}
	return got
}

func holds(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	case <-time.After(50 * time.Millisecond):
		return false
	}
}

func TestFairQueueTakesTurnsAcrossAccounts(t *testing.T) {
	q := newFairQueue(nil)
	first := enter(t, q, "a")
	if !holds(first) {
		t.Fatal("an empty queue did not give the turn at once")
	}
	var backlog []<-chan struct{}
	for range 5 {
		backlog = append(backlog, enter(t, q, "a"))
	}
	quiet := enter(t, q, "b")
	if holds(backlog[0]) || holds(quiet) {
		t.Fatal("a second call got the turn while the first held it")
	}
	q.pass("a", true)
	if !holds(backlog[0]) {
		t.Fatal("a's next call did not get the turn")
	}
	q.pass("a", true)
	if !holds(quiet) {
		t.Fatal("b's call waited behind more than one of a's backlog")
	}
	q.pass("b", true)
	if !holds(backlog[1]) {
		t.Fatal("a's backlog did not resume after b's turn")
	}
}

func TestFairQueuePassesOverAnAccountAtItsCap(t *testing.T) {
	q := newFairQueue(func(account string) int {
		if account == "capped" {
			return 1
		}
		return 0
	})
	if !holds(enter(t, q, "capped")) {
		t.Fatal("first call held up")
	}
	q.pass("capped", true) // one worker: at its cap
	second := enter(t, q, "capped")
	other := enter(t, q, "other")
	if !holds(other) {
		t.Fatal("another account waited behind an account at its cap")
	}
	q.pass("other", true)
	if holds(second) {
		t.Fatal("a call beyond its account's cap got the turn")
	}
	if !q.wants("capped") || q.wants("other") {
		t.Fatal("wants: only a worker of the capped account would help")
	}
	q.workerEnded("capped")
	if !holds(second) {
		t.Fatal("the capped call did not go once its account's worker ended")
	}
	q.pass("capped", false)
}

func TestFairQueueGivesUpWithItsContext(t *testing.T) {
	q := newFairQueue(nil)
	if !holds(enter(t, q, "a")) {
		t.Fatal("first call held up")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := q.wait(ctx, "b", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait = %v, want the context's deadline", err)
	}
	if n := q.waiting(); n != 0 {
		t.Fatalf("a call that gave up is still in line (%d waiting)", n)
	}
	later := enter(t, q, "c")
	q.pass("a", false)
	if !holds(later) {
		t.Fatal("the turn was not passed on past the call that gave up")
	}
}

func TestAccountCapHoldsANewWorkerUntilOneEnds(t *testing.T) {
	l := &fakeLauncher{}
	s := New(Options{Launcher: l, QueueTimeout: 100 * time.Millisecond, MaxWorkers: func(account string) int {
		if account == "a" {
			return 1
		}
		return 0
	}})
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	var prepared atomic.Int32
	ctx := context.Background()
	first, err := s.Acquire(ctx, key, prepareCounting(&prepared), nil)
	if err != nil {
		t.Fatal(err)
	}
	other := key
	other.Function = "g"
	_, err = s.Acquire(ctx, other, prepareCounting(&prepared), nil)
	if !errors.Is(err, machine.ErrNoCapacity) || !strings.Contains(err.Error(), "account a already runs its cap of 1 workers") {
		t.Fatalf("second worker of a capped account: %v, want the cap named", err)
	}
	otherAccount := key
	otherAccount.Account = "b"
	l2, err := s.Acquire(ctx, otherAccount, prepareCounting(&prepared), nil)
	if err != nil {
		t.Fatalf("another account was held by a's cap: %v", err)
	}
	s.Discard(l2)
	// A warm worker of its own in another pool is torn down for it.
	s.Release(first, time.Minute)
	l3, err := s.Acquire(ctx, other, prepareCounting(&prepared), nil)
	if err != nil {
		t.Fatalf("the capped account's idle worker was not given up for its new call: %v", err)
	}
	s.Discard(l3)
}
