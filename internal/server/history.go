package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"time"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/state"
)

// runLogLimit bounds the output kept per run in the history; what the
// caller sees live is never cut.
const runLogLimit = 1 << 20

// historyQueue bounds the records waiting to be written; beyond it records
// are dropped (and counted) rather than slowing calls down.
const historyQueue = 4096

// History records every run and its output in the state store. Calls hand
// it records without waiting; one goroutine writes them, so a slow disk
// never holds a call up.
type History struct {
	store     *state.Store
	log       *slog.Logger
	retention time.Duration
	records   chan func(context.Context) error

	mu      sync.Mutex
	dropped int
}

// NewHistory returns a History over store that prunes finished runs older
// than retention (0 keeps them forever). Run must be running for records to
// be written.
func NewHistory(store *state.Store, retention time.Duration, log *slog.Logger) *History {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &History{store: store, log: log, retention: retention, records: make(chan func(context.Context) error, historyQueue)}
}

// Run writes records until ctx ends, then writes what is queued and returns.
func (h *History) Run(ctx context.Context) {
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	h.prune(ctx)
	for {
		select {
		case rec := <-h.records:
			h.write(context.WithoutCancel(ctx), rec)
		case <-prune.C:
			h.prune(ctx)
		case <-ctx.Done():
			for {
				select {
				case rec := <-h.records:
					h.write(context.WithoutCancel(ctx), rec)
				default:
					return
				}
			}
		}
	}
}

func (h *History) write(ctx context.Context, rec func(context.Context) error) {
	if err := rec(ctx); err != nil {
		h.log.Warn("recording run history", "err", err)
	}
}

func (h *History) prune(ctx context.Context) {
	if h.retention <= 0 {
		return
	}
	n, err := h.store.PruneRuns(ctx, time.Now().Add(-h.retention))
	if err != nil {
		h.log.Warn("pruning run history", "err", err)
	} else if n > 0 {
		h.log.Info("pruned run history", "runs", n, "retention", h.retention)
	}
}

func (h *History) enqueue(rec func(context.Context) error) {
	select {
	case h.records <- rec:
	default:
		h.mu.Lock()
		h.dropped++
		n := h.dropped
		h.mu.Unlock()
		if n == 1 || n%1000 == 0 {
			h.log.Warn("run history is behind; dropping records", "dropped", n)
		}
	}
}

// runRecord follows one run from its arrival to its end.
type runRecord struct {
	h       *History
	run     state.Run
	logs    []state.LogLine
	logSize int
}

func newRunID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "r-" + hex.EncodeToString(b[:])
}

// Begin records a run that just arrived.
func (h *History) Begin(account, function, machineType string) *runRecord {
	r := &runRecord{h: h, run: state.Run{
		ID: newRunID(), Account: account, Function: function, MachineType: machineType, QueuedAt: time.Now(),
	}}
	run := r.run
	h.enqueue(func(ctx context.Context) error { return h.store.CreateRun(ctx, run) })
	return r
}

// Started notes that a worker took the run.
func (r *runRecord) Started(workerID, envKey string) {
	r.run.StartedAt, r.run.WorkerID, r.run.EnvKey = time.Now(), workerID, envKey
}

// Output keeps the run's output for its log, up to runLogLimit.
func (r *runRecord) Output(o *atollv1.Output) {
	if r.logSize >= runLogLimit {
		return
	}
	data := o.GetData()
	if r.logSize+len(data) > runLogLimit {
		data = append(data[:runLogLimit-r.logSize:runLogLimit-r.logSize], "\n[atoll: output truncated in the run history]\n"...)
	}
	r.logSize += len(data)
	r.logs = append(r.logs, state.LogLine{Stream: streamName(o.GetStream()), At: time.Now(), Data: string(data)})
}

// Finish records how the run ended, with its output.
func (r *runRecord) Finish(outcome state.Outcome, exitStatus *int) {
	run, logs, h := r.run, r.logs, r.h
	run.FinishedAt, run.Outcome, run.ExitStatus = time.Now(), outcome, exitStatus
	h.enqueue(func(ctx context.Context) error {
		if len(logs) > 0 {
			if err := h.store.AppendLogs(ctx, run.ID, logs); err != nil {
				return err
			}
		}
		return h.store.CompleteRun(ctx, run)
	})
}

func streamName(s atollv1.Stream) state.Stream {
	switch s {
	case atollv1.Stream_STREAM_STDOUT:
		return state.StreamStdout
	case atollv1.Stream_STREAM_STDERR:
		return state.StreamStderr
	default:
		return state.StreamSystem
	}
}

// outcomeOf maps how a run ended to the outcome recorded.
func outcomeOf(result *atollv1.Result, failure *atollv1.Failure) (state.Outcome, *int) {
	if failure == nil {
		if result.GetException() != nil {
			return state.OutcomeError, nil
		}
		return state.OutcomeOK, nil
	}
	code := int(failure.GetExitCode())
	switch failure.GetKind() {
	case atollv1.FailureKind_FAILURE_KIND_WORKER_CRASHED:
		return state.OutcomeCrashed, &code
	case atollv1.FailureKind_FAILURE_KIND_OUT_OF_MEMORY:
		return state.OutcomeOOM, &code
	case atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD, atollv1.FailureKind_FAILURE_KIND_PYTHON_UNAVAILABLE:
		return state.OutcomeBuildFailed, nil
	case atollv1.FailureKind_FAILURE_KIND_CANCELLED:
		return state.OutcomeCancelled, nil
	case atollv1.FailureKind_FAILURE_KIND_NO_CAPACITY:
		return state.OutcomeTimeout, nil
	default:
		return state.OutcomeError, nil
	}
}
