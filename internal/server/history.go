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

// historyBatch bounds the records written in one transaction, and
// historyGather is how long the writer waits for more before writing: a
// transaction costs far more than a record, and history may lag a little.
const (
	historyBatch  = 256
	historyGather = 25 * time.Millisecond
)

// History records every run and its output in the state store. Calls hand
// it records without waiting; one goroutine writes whatever has queued up
// in one transaction, so a slow disk never holds a call up and a busy
// server pays one transaction for many runs.
type History struct {
	store     *state.Store
	log       *slog.Logger
	retention time.Duration
	records   chan state.RunRecord

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
	return &History{store: store, log: log, retention: retention, records: make(chan state.RunRecord, historyQueue)}
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

// write saves first and whatever else arrives within historyGather, one
// record per run (the latest, with all the output queued for it), in one
// transaction.
func (h *History) write(ctx context.Context, first state.RunRecord) {
	batch := []state.RunRecord{first}
	index := map[string]int{first.Run.ID: 0}
	gather := time.NewTimer(historyGather)
	defer gather.Stop()
	for len(batch) < historyBatch {
		var rec state.RunRecord
		select {
		case rec = <-h.records:
		case <-gather.C:
		}
		if rec.Run.ID == "" {
			break
		}
		if i, ok := index[rec.Run.ID]; ok {
			rec.Logs = append(batch[i].Logs, rec.Logs...)
			batch[i] = rec
			continue
		}
		index[rec.Run.ID] = len(batch)
		batch = append(batch, rec)
	}
	if err := h.store.SaveRuns(ctx, batch); err != nil {
		h.log.Warn("recording run history", "runs", len(batch), "err", err)
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

func (h *History) enqueue(rec state.RunRecord) {
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
	return h.BeginAttempt(account, function, machineType, "", 0)
}

// BeginAttempt records a run that is attempt n of a call: callID is the
// first attempt's run id ("" for the first attempt itself).
func (h *History) BeginAttempt(account, function, machineType, callID string, n int) *runRecord {
	r := &runRecord{h: h, run: state.Run{
		ID: newRunID(), Account: account, Function: function, MachineType: machineType, QueuedAt: time.Now(),
		CallID: callID, Attempt: n,
	}}
	h.enqueue(state.RunRecord{Run: r.run})
	return r
}

// Started notes that a worker took the run.
func (r *runRecord) Started(workerID, envKey string) {
	r.run.StartedAt, r.run.WorkerID, r.run.EnvKey = time.Now(), workerID, envKey
	// Recorded now, not only at the end, so that `atoll runs` tells a
	// running run from a queued one.
	r.h.enqueue(state.RunRecord{Run: r.run})
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
	run := r.run
	run.FinishedAt, run.Outcome, run.ExitStatus = time.Now(), outcome, exitStatus
	r.h.enqueue(state.RunRecord{Run: run, Logs: r.logs})
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
	case atollv1.FailureKind_FAILURE_KIND_TIMEOUT:
		return state.OutcomeTimedOut, nil
	default:
		return state.OutcomeError, nil
	}
}
