package server

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/state"
)

// Output is on disk as it streams, not only when the run ends: a server
// that dies mid-call keeps every line its caller saw, but the last
// historyGather's worth.
func TestHistoryWritesOutputAsItStreams(t *testing.T) {
	ctx := context.Background()
	store, err := state.Open(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := store.CreateAccount(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	h := NewHistory(store, 0, nil)
	hctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { h.Run(hctx); close(done) }()
	defer func() { stop(); <-done }()

	rec := h.Begin("alice", "f", "XS")
	rec.Started("w-1", "env")
	for _, line := range []string{"one\n", "two\n"} {
		rec.Output(&atollv1.Output{Stream: atollv1.Stream_STREAM_STDOUT, Data: []byte(line)})
	}
	var got string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(historyGather) {
		lines, err := store.Logs(ctx, "alice", rec.run.ID)
		if err != nil {
			continue // the run's row may not be written yet
		}
		var b strings.Builder
		for _, l := range lines {
			b.WriteString(l.Data)
		}
		if got = b.String(); got == "one\ntwo\n" {
			break
		}
	}
	if got != "one\ntwo\n" {
		t.Fatalf("logs of the unfinished run = %q, want both lines", got)
	}
	run, err := store.GetRun(ctx, "alice", rec.run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if run.Finished() || run.WorkerID != "w-1" {
		t.Errorf("run = %+v; want started on w-1, not finished", run)
	}
	rec.Output(&atollv1.Output{Stream: atollv1.Stream_STREAM_STDERR, Data: []byte("three\n")})
	rec.Finish(state.OutcomeOK, nil)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(historyGather) {
		if run, err = store.GetRun(ctx, "alice", rec.run.ID); err == nil && run.Finished() {
			break
		}
	}
	lines, err := store.Logs(ctx, "alice", rec.run.ID)
	if err != nil || len(lines) != 3 || lines[2].Data != "three\n" || !run.Finished() {
		t.Errorf("after finish: run %+v, lines %+v, err %v", run, lines, err)
	}
}

func TestRunIDsGrowWithTime(t *testing.T) {
	seen := make(map[string]bool)
	prev := newRunID()
	for range 1000 {
		id := newRunID()
		if seen[id] {
			t.Fatalf("run id %s issued twice", id)
		}
		seen[id] = true
		// Within one millisecond the random part orders them; only the
		// time prefix must never go back.
		if id[:14] < prev[:14] {
			t.Fatalf("run id %s sorts before the earlier %s", id, prev)
		}
		if len(id) > MaxRunIDBytes {
			t.Fatalf("run id %s exceeds the edge's bound of %d bytes", id, MaxRunIDBytes)
		}
		prev = id
	}
	time.Sleep(2 * time.Millisecond)
	if later := newRunID(); later <= prev {
		t.Fatalf("run id %s, issued later, sorts before %s", later, prev)
	}
}

func openHistory(t *testing.T) (*state.Store, *History, func()) {
	t.Helper()
	ctx := context.Background()
	store, err := state.Open(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.CreateAccount(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	h := NewHistory(store, 0, nil)
	hctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { h.Run(hctx); close(done) }()
	var once sync.Once
	shutdown := func() { once.Do(func() { stop(); <-done }) }
	t.Cleanup(shutdown)
	return store, h, shutdown
}

// A run that neither ends nor prints for a while (a long silent call) is
// left for a later batch once, and still reaches the store while it runs.
func TestHistoryRecordsASilentRunInFlight(t *testing.T) {
	store, h, _ := openHistory(t)
	ctx := context.Background()
	rec := h.Begin("alice", "f", "XS")
	rec.Started("w-1", "env")
	var run state.Run
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(historyGather) {
		if run, err = store.GetRun(ctx, "alice", rec.run.ID); err == nil {
			break
		}
	}
	if err != nil || run.Finished() || run.WorkerID != "w-1" {
		t.Fatalf("run in flight = %+v, %v; want it recorded, started on w-1, not finished", run, err)
	}
	rec.Finish(state.OutcomeOK, nil)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(historyGather) {
		if run, err = store.GetRun(ctx, "alice", rec.run.ID); err == nil && run.Finished() {
			break
		}
	}
	if !run.Finished() || run.Outcome != state.OutcomeOK {
		t.Errorf("after finish: run %+v, %v", run, err)
	}
}

// What is queued or left for a later batch when the writer stops is
// written before Run returns.
func TestHistoryWritesEverythingAtShutdown(t *testing.T) {
	store, h, shutdown := openHistory(t)
	ctx := context.Background()
	silent := h.Begin("alice", "silent", "XS")
	silent.Started("w-1", "env")
	done := h.Begin("alice", "done", "XS")
	done.Finish(state.OutcomeError, nil)
	shutdown()
	run, err := store.GetRun(ctx, "alice", silent.run.ID)
	if err != nil || run.Finished() || run.WorkerID != "w-1" {
		t.Errorf("silent run = %+v, %v; want it recorded in flight on w-1", run, err)
	}
	run, err = store.GetRun(ctx, "alice", done.run.ID)
	if err != nil || run.Outcome != state.OutcomeError {
		t.Errorf("finished run = %+v, %v; want it recorded as error", run, err)
	}
}
