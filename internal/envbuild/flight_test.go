package envbuild

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// These tests drive join with stand-in builds; they need no uv.

func TestJoinSharesOneBuild(t *testing.T) {
	b := &Builder{flights: map[string]*flight{}}
	var runs atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{})
	build := func(ctx context.Context, logf func(string)) error {
		runs.Add(1)
		logf("first")
		close(started)
		<-release
		logf("second")
		return errors.New("boom")
	}

	var first lines
	errs := make(chan error, 2)
	go func() { errs <- b.join(context.Background(), "k", first.logf, build) }()
	<-started
	var late lines
	go func() { errs <- b.join(context.Background(), "k", late.logf, build) }()
	waitFor(t, func() bool { return len(late.get()) == 1 }) // replayed "first"
	close(release)
	for range 2 {
		if err := <-errs; err == nil || err.Error() != "boom" {
			t.Errorf("join = %v, want the build's error", err)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("build ran %d times, want 1", n)
	}
	want := []string{"first", "second"}
	if !slices.Equal(first.get(), want) || !slices.Equal(late.get(), want) {
		t.Errorf("logs = %q and %q, want %q for both", first.get(), late.get(), want)
	}

	// Finished (and failed): the next join builds again.
	runs.Store(0)
	if err := b.join(context.Background(), "k", nil, func(context.Context, func(string)) error { runs.Add(1); return nil }); err != nil || runs.Load() != 1 {
		t.Errorf("join after a failure = %v with %d runs, want a new run", err, runs.Load())
	}
	b.Close()
}

func TestJoinCancellation(t *testing.T) {
	b := &Builder{flights: map[string]*flight{}}
	started := make(chan struct{})
	finish := make(chan struct{})
	var buildErr atomic.Value
	build := func(ctx context.Context, logf func(string)) error {
		close(started)
		select {
		case <-ctx.Done():
			buildErr.Store(ctx.Err())
			return ctx.Err()
		case <-finish:
			return nil
		}
	}

	leaving, leave := context.WithCancel(context.Background())
	staying, stay := context.WithCancel(context.Background())
	defer stay()
	results := make(chan error, 2)
	go func() { results <- b.join(leaving, "k", nil, build) }()
	<-started
	var wg sync.WaitGroup
	wg.Go(func() { results <- b.join(staying, "k", nil, build) })
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.flights["k"].waiters == 2 })

	leave()
	if err := <-results; !errors.Is(err, context.Canceled) {
		t.Errorf("leaving caller got %v, want context.Canceled", err)
	}
	time.Sleep(20 * time.Millisecond)
	if buildErr.Load() != nil {
		t.Fatal("one caller leaving cancelled the build the other waits for")
	}
	close(finish)
	if err := <-results; err != nil {
		t.Errorf("staying caller got %v, want nil", err)
	}
	wg.Wait()

	// The last caller leaving cancels the build.
	started2 := make(chan struct{})
	waitCancel := func(ctx context.Context, _ func(string)) error {
		close(started2)
		<-ctx.Done()
		buildErr.Store(ctx.Err())
		return ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started2; cancel() }()
	if err := b.join(ctx, "k2", nil, waitCancel); !errors.Is(err, context.Canceled) {
		t.Errorf("join = %v, want context.Canceled", err)
	}
	b.Close()
	if err, _ := buildErr.Load().(error); !errors.Is(err, context.Canceled) {
		t.Errorf("abandoned build saw %v, want its context cancelled", err)
	}
	if err := b.join(context.Background(), "k3", nil, waitCancel); !errors.Is(err, ErrClosed) {
		t.Errorf("join after Close = %v, want ErrClosed", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
