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

// historyQueue bounds the runs waiting to be written (each run waits in
// line at most once at a time, however much it prints); beyond it a run's
// update waits for its next event rather than slowing calls down.
const historyQueue = 4096

// historyBatch bounds the runs written in one transaction, and
// historyGather is how long the writer waits for more before writing: a
// transaction costs far more than a record, and history may lag a little.
// historyGather is also the window of output a crash can lose: a run's
// output is queued as it streams, and what the caller saw is on disk
// within historyGather plus one transaction (WAL, synchronous=NORMAL: a
// committed transaction survives the process dying).
const (
	historyBatch  = 256
	historyGather = 25 * time.Millisecond
)

// History records every run and its output in the state store. Calls hand
// it their runs without waiting; one goroutine writes whatever has queued up
// in one transaction, so a slow disk never holds a call up and a busy
// server pays one transaction for many runs.
type History struct {
	store     *state.Store
	log       *slog.Logger
	retention time.Duration
	records   chan *runRecord
	observer  RunObserver

	mu      sync.Mutex
	dropped int
}

// NewHistory returns a History over store that prunes finished runs older
// than retention (0 keeps them forever). Run must be running for records to
// be written.
func NewHistory(store *state.Store, retention time.Duration, log *slog.Logger, opts ...HistoryOption) *History {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &History{store: store, log: log, retention: retention, records: make(chan *runRecord, historyQueue)}
	for _, opt := range opts {
		opt(h)
	}
	return h
}

// Run writes records until ctx ends, then writes what is queued and returns.
func (h *History) Run(ctx context.Context) {
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	h.prune(ctx)
	// carried are runs the last batch left for the next one (see write).
	var carried []*runRecord
	for {
		if len(carried) > 0 {
			carried = h.write(context.WithoutCancel(ctx), carried, false)
			continue
		}
		select {
		case r := <-h.records:
			carried = h.write(context.WithoutCancel(ctx), []*runRecord{r}, false)
		case <-prune.C:
			h.prune(ctx)
		case <-ctx.Done():
			for {
				select {
				case r := <-h.records:
					carried = append(carried, r)
				default:
					h.write(context.WithoutCancel(ctx), carried, true)
					return
				}
			}
		}
	}
}

// write saves batch and whatever else arrives within historyGather (all of
// it at once when final), each run as it stands with the output it
// gathered meanwhile, in one transaction. A run that has neither ended nor
// printed yet is left for the next batch, once: most calls end within it,
// and are then written once, finished, instead of twice. Its caller has
// seen nothing that a crash could lose, and the run is on disk within two
// windows all the same. write returns the runs it left.
func (h *History) write(ctx context.Context, batch []*runRecord, final bool) []*runRecord {
	if !final {
		gather := time.NewTimer(historyGather)
		defer gather.Stop()
	gathering:
		for len(batch) < historyBatch {
			select {
			case r := <-h.records:
				batch = append(batch, r)
			case <-gather.C:
				break gathering
			}
		}
	}
	records := make([]state.RunRecord, 0, len(batch))
	var left []*runRecord
	for _, r := range batch {
		if rec, ok := r.take(final); ok {
			records = append(records, rec)
		} else {
			left = append(left, r)
		}
	}
	if len(records) > 0 {
		if err := h.store.SaveRuns(ctx, records); err != nil {
			h.log.Warn("recording run history", "runs", len(records), "err", err)
		}
	}
	return left
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

// enqueue puts r in line for the writer, unless it waits there already.
// A full line delays the update to the run's next event; a run's last
// update (wait) waits for room instead, since no event follows it.
func (h *History) enqueue(r *runRecord, wait bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.queued {
		return
	}
	if wait {
		h.records <- r
		r.queued = true
		return
	}
	select {
	case h.records <- r:
		r.queued = true
	default:
		h.mu.Lock()
		h.dropped++
		n := h.dropped
		h.mu.Unlock()
		if n == 1 || n%1000 == 0 {
			h.log.Warn("run history is behind; a run's update waits for its next event", "delayed", n)
		}
	}
}

// runRecord follows one run from its arrival to its end: its latest state,
// and the output not yet handed to the writer.
type runRecord struct {
	h *History

	mu      sync.Mutex
	run     state.Run
	pending []state.LogLine
	logSize int
	queued  bool // waiting in h.records, or with the writer
	// carried says the writer left the run for a later batch once
	// already; it is not left again.
	carried bool
}

// take returns the run as it stands with its pending output, which is
// then the writer's; or, unless all must go, leaves a run that has not
// ended and has no output for a later batch, once (false).
func (r *runRecord) take(all bool) (state.RunRecord, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !all && !r.carried && r.run.FinishedAt.IsZero() && len(r.pending) == 0 {
		r.carried = true
		return state.RunRecord{}, false
	}
	rec := state.RunRecord{Run: r.run, Logs: r.pending}
	r.pending, r.queued = nil, false
	return rec, true
}

// newRunID returns a new unique run id: the time in milliseconds, then 8
// random bytes. Ids that grow with time are appended at the end of the
// history's id index, where random ones would each land on a page of its
// own: a busy server's batch of runs then writes a few pages, not one per
// run, and costs half the CPU. Listing by id also lists by arrival.
func newRunID() string {
	var b [14]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[6:])
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
	h.enqueue(r, false)
	if h.observer != nil {
		h.observer.RunQueued(r.run)
	}
	return r
}

// Started notes that a worker took the run.
func (r *runRecord) Started(workerID, envKey string) {
	r.mu.Lock()
	r.run.StartedAt, r.run.WorkerID, r.run.EnvKey = time.Now(), workerID, envKey
	run := r.run
	r.mu.Unlock()
	r.h.enqueue(r, false)
	if r.h.observer != nil {
		r.h.observer.RunStarted(run)
	}
}

// Output records a chunk of the run's output, up to runLogLimit, as it
// streams: a crash loses at most historyGather's worth of what the caller
// saw.
func (r *runRecord) Output(o *atollv1.Output) {
	if r.h.observer != nil {
		r.mu.Lock()
		run := r.run
		r.mu.Unlock()
		r.h.observer.RunOutput(run, state.LogLine{Stream: streamName(o.GetStream()), At: time.Now(), Data: string(o.GetData())})
	}
	r.mu.Lock()
	if r.logSize >= runLogLimit {
		r.mu.Unlock()
		return
	}
	data := o.GetData()
	if r.logSize+len(data) > runLogLimit {
		data = append(data[:runLogLimit-r.logSize:runLogLimit-r.logSize], "\n[atoll: output truncated in the run history]\n"...)
	}
	r.logSize += len(data)
	r.pending = append(r.pending, state.LogLine{Stream: streamName(o.GetStream()), At: time.Now(), Data: string(data)})
	r.mu.Unlock()
	r.h.enqueue(r, false)
}

// Finish records how the run ended.
func (r *runRecord) Finish(outcome state.Outcome, exitStatus *int) {
	r.mu.Lock()
	r.run.FinishedAt, r.run.Outcome, r.run.ExitStatus = time.Now(), outcome, exitStatus
	run := r.run
	r.mu.Unlock()
	r.h.enqueue(r, true)
	if r.h.observer != nil {
		r.h.observer.RunFinished(run)
	}
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
