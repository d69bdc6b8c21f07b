package scheduler

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atoll-dev/atoll/internal/machine"
)

func TestReleasedWorkerGoesToAWaitingCallOfItsPool(t *testing.T) {
	s := newCappedScheduler(t, 0.25, 5*time.Second) // room for one XS worker
	launcher := s.launcher.(*fakeLauncher)
	ctx := context.Background()
	busy, err := s.Acquire(ctx, key, prepareXS, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := leased(busy)
	queued := make(chan struct{})
	got := make(chan *Lease, 1)
	go func() {
		l, err := s.Acquire(ctx, key, prepareXS, func() { close(queued) })
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	<-queued
	s.Release(busy, time.Hour)
	l := <-got
	if l == nil {
		t.FailNow()
	}
	if leased(l) != first {
		t.Error("the waiting call got a new worker instead of the released warm one")
	}
	if out, err := call(t, l, "x"); err != nil || out != "x" {
		t.Errorf("call on the handed-over worker = %q, %v", out, err)
	}
	if n := launcher.started.Load(); n != 1 {
		t.Errorf("started %d workers, want 1", n)
	}
	s.Release(l, 0)
}

func TestReleasedWorkerOfAnotherPoolMakesRoom(t *testing.T) {
	s := newCappedScheduler(t, 0.25, 5*time.Second)
	ctx := context.Background()
	busy, err := s.Acquire(ctx, key, prepareXS, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := leased(busy)
	other := key
	other.Function = "other"
	queued := make(chan struct{})
	got := make(chan *Lease, 1)
	go func() {
		l, err := s.Acquire(ctx, other, prepareXS, func() { close(queued) })
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	<-queued
	s.Release(busy, time.Hour)
	l := <-got
	if l == nil {
		t.FailNow()
	}
	if leased(l) == first {
		t.Fatal("a worker of another pool was handed over")
	}
	select {
	case <-first.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the released worker of the other pool was kept warm while a call waited")
	}
	s.Release(l, 0)
}

// Under overload (more callers than room), every call after the first
// round is served by a warm worker: none is started that was not needed.
func TestOverloadStartsNoWorkerItDoesNotNeed(t *testing.T) {
	const slots, callers, rounds = 4, 7, 20
	s := New(Options{
		Launcher:     &fakeLauncher{},
		Capacity:     machine.NewCapacity(machine.Host{CPUs: slots * 0.25, MemoryBytes: 64 * machine.GiB}),
		QueueTimeout: 10 * time.Second,
	})
	defer s.Shutdown(context.Background())
	launcher := s.launcher.(*fakeLauncher)
	var calls atomic.Int32
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				l, err := s.Acquire(context.Background(), key, prepareXS, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if out, err := call(t, l, "v"); err != nil || out != "v" {
					t.Errorf("call = %q, %v", out, err)
				}
				calls.Add(1)
				s.Release(l, time.Hour)
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n != callers*rounds {
		t.Errorf("%d calls answered, want %d", n, callers*rounds)
	}
	if n := launcher.started.Load(); n > slots {
		t.Errorf("started %d workers for %d slots", n, slots)
	}
}

// A call of another pool that has waited longer is not starved by a busy
// pool handing its workers on among its own calls.
func TestLongerWaitingCallOfAnotherPoolGoesFirst(t *testing.T) {
	s := newCappedScheduler(t, 0.25, 5*time.Second)
	ctx := context.Background()
	busy, err := s.Acquire(ctx, key, prepareXS, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := key
	other.Function = "other"
	acquire := func(k PoolKey) (<-chan *Lease, <-chan struct{}) {
		queued := make(chan struct{})
		got := make(chan *Lease, 1)
		go func() {
			l, err := s.Acquire(ctx, k, prepareXS, func() { close(queued) })
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		return got, queued
	}
	otherGot, otherQueued := acquire(other)
	<-otherQueued
	waitFor(t, func() bool { return s.capacity.Waiting() == 1 }) // in line for capacity first
	sameGot, sameQueued := acquire(key)
	<-sameQueued
	waitFor(t, func() bool { return s.Waiting() == 2 }) // in line for its turn
	s.Release(busy, time.Hour)
	l := <-otherGot
	if l == nil {
		t.FailNow()
	}
	s.Release(l, 0)
	if l := <-sameGot; l != nil {
		s.Release(l, 0)
	}
}

// Shutdown ends the wait of calls queued for room: they are told the
// server is shutting down at once, not after the queue timeout.
func TestShutdownEndsTheWaitForRoom(t *testing.T) {
	s := newCappedScheduler(t, 0.25, time.Minute)
	ctx := context.Background()
	if _, err := s.Acquire(ctx, key, prepareXS, nil); err != nil {
		t.Fatal(err)
	}
	queued := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := s.Acquire(ctx, key, prepareXS, func() { close(queued) })
		errc <- err
	}()
	<-queued
	go s.Shutdown(ctx)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("queued call: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the queued call still waits after Shutdown")
	}
}
