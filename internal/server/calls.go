package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/sealed"
	"github.com/atoll-dev/atoll/internal/secrets"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// DefaultMaxTimeout is the longest a function may run when the server's
// configuration does not say.
const DefaultMaxTimeout = 24 * time.Hour

// maxRetries bounds a call's retry policy: a typo of 1000 retries must not
// hold a worker for hours.
const maxRetries = 10

// maxBackoff bounds the wait before one retry.
const maxBackoff = 5 * time.Minute

// Secrets resolves the secrets a call names into the environment variables
// its function sees.
type Secrets interface {
	// Resolve returns the variables of the named secrets of account, the
	// later name winning on a clash; a missing name is secrets.ErrNotFound.
	Resolve(ctx context.Context, account string, names []string) (map[string]string, error)
}

// Running tracks the runs in progress so that they can be cancelled by id
// (`atoll cancel RUN_ID`). The Functions and Admin services share one.
type Running struct {
	mu   sync.Mutex
	runs map[string]runningEntry
}

type runningEntry struct {
	account string
	cancel  context.CancelCauseFunc
}

// NewRunning returns an empty registry.
func NewRunning() *Running { return &Running{runs: make(map[string]runningEntry)} }

func (r *Running) add(id, account string, cancel context.CancelCauseFunc) {
	r.mu.Lock()
	r.runs[id] = runningEntry{account: account, cancel: cancel}
	r.mu.Unlock()
}

func (r *Running) remove(id string) {
	r.mu.Lock()
	delete(r.runs, id)
	r.mu.Unlock()
}

// Cancel stops the run id of account; another account's run is not found.
func (r *Running) Cancel(account, id string) error {
	r.mu.Lock()
	e, ok := r.runs[id]
	r.mu.Unlock()
	if !ok || e.account != account {
		return fmt.Errorf("%w: no run %q in progress in account %s", ErrRunNotFound, id, account)
	}
	e.cancel(errCancelledByRequest)
	return nil
}

// callSpec is what every attempt of a call, and every item of a map,
// shares: the checked request, its pool and its secrets.
type callSpec struct {
	account string
	req     *atollv1.RunRequest
	mt      machine.Type
	key     scheduler.PoolKey
	env     map[string]string
	timeout time.Duration
}

// prepare checks a request and resolves what its calls share. Nothing is
// built or started yet: a missing secret or a bad option fails here.
func (f *Functions) prepare(ctx context.Context, account string, req *atollv1.RunRequest) (*callSpec, error) {
	if err := validate(req); err != nil {
		return nil, err
	}
	timeout, err := f.timeoutOf(req)
	if err != nil {
		return nil, err
	}
	if err := validateRetries(req.GetRetries()); err != nil {
		return nil, err
	}
	mt, err := f.opts.Catalog.Lookup(req.GetMachineType())
	if err != nil {
		return nil, err
	}
	if f.opts.Capacity != nil {
		if err := f.opts.Capacity.CheckFits(mt); err != nil {
			return nil, err
		}
	}
	envKey, err := f.opts.Environments.Key(req.GetEnvironment())
	if err != nil {
		return nil, err
	}
	spec := &callSpec{
		account: account, req: req, mt: mt, timeout: timeout,
		key: scheduler.PoolKey{Account: account, Function: req.GetFunctionName(), EnvKey: envKey, MachineType: mt.Name},
	}
	if names := req.GetSecrets(); len(names) > 0 {
		if f.opts.Secrets == nil {
			return nil, fmt.Errorf("%w: this host keeps no secrets, so the call cannot use %q; "+
				"secrets are set on a server with `atoll secrets set`", secrets.ErrNotFound, names)
		}
		if spec.env, err = f.opts.Secrets.Resolve(ctx, account, names); err != nil {
			return nil, err
		}
	}
	return spec, nil
}

func (f *Functions) timeoutOf(req *atollv1.RunRequest) (time.Duration, error) {
	limit := f.opts.MaxTimeout
	if limit <= 0 {
		limit = DefaultMaxTimeout
	}
	secs := req.GetTimeoutSeconds()
	switch {
	case secs < 0 || math.IsNaN(secs) || math.IsInf(secs, 0):
		return 0, invalid(fmt.Sprintf("timeout must be a positive number of seconds, got %v", secs))
	case secs == 0:
		return limit, nil
	}
	d := time.Duration(secs * float64(time.Second))
	if d > limit {
		return 0, invalid(fmt.Sprintf("timeout %gs exceeds this server's maximum of %s; ask for at most that", secs, limit))
	}
	return d, nil
}

func validateRetries(p *atollv1.RetryPolicy) error {
	switch {
	case p == nil:
		return nil
	case p.GetMaxRetries() < 0 || p.GetMaxRetries() > maxRetries:
		return invalid(fmt.Sprintf("retries must be between 0 and %d, got %d", maxRetries, p.GetMaxRetries()))
	case p.GetBackoffSeconds() < 0 || math.IsNaN(p.GetBackoffSeconds()) || p.GetBackoffSeconds() > maxBackoff.Seconds():
		return invalid(fmt.Sprintf("retry backoff must be between 0 and %gs, got %v", maxBackoff.Seconds(), p.GetBackoffSeconds()))
	}
	return nil
}

// callEvents receives what one call produces besides its outcome.
type callEvents struct {
	status func(*atollv1.Status)
	output func(*atollv1.Output)
	// build receives the environment's build output; nil sends it to
	// output.
	build   func(*atollv1.Output)
	yielded func([]byte) // nil: the function may not yield
	// sharedValue, if set, takes a large returned value in a sealed memfd
	// (the Result's value is then empty); it owns the file.
	sharedValue func(*sealed.File)
}

// callArgs are a call's pickled arguments: in memory, or in a sealed memfd
// the caller passed, which reaches the worker without being read.
type callArgs struct {
	inline []byte
	shared *sealed.File
}

// callOutcome is how one call (all its attempts) ended: a result, or a
// failure for the caller, or the caller's own cancellation (neither).
type callOutcome struct {
	result  *atollv1.Result
	failure *atollv1.Failure
}

// call runs spec with arguments, retrying as its policy says; each attempt
// is a run of its own in the history, linked to the first by call id.
func (f *Functions) call(ctx context.Context, spec *callSpec, args callArgs, ev callEvents) callOutcome {
	policy := spec.req.GetRetries()
	callID := ""
	for attempt := 1; ; attempt++ {
		out, runID := f.attempt(ctx, spec, args, ev, callID, attempt)
		if callID == "" {
			callID = runID
		}
		if ctx.Err() != nil || attempt > int(policy.GetMaxRetries()) || !retryable(out, policy, ev.yielded != nil && out.yieldedAny) {
			return out.callOutcome
		}
		backoff := time.Duration(policy.GetBackoffSeconds()*float64(time.Second)) << (attempt - 1)
		backoff = min(backoff, maxBackoff)
		ev.output(&atollv1.Output{Stream: atollv1.Stream_STREAM_SYSTEM, Data: fmt.Appendf(nil,
			"attempt %d of %d failed (%s); retrying in %s\n", attempt, policy.GetMaxRetries()+1, out.reason(), backoff)})
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return callOutcome{}
		}
	}
}

type attemptOutcome struct {
	callOutcome
	// yieldedAny says a generator already streamed values: a retry would
	// repeat them, so it is not retried.
	yieldedAny bool
}

func (o attemptOutcome) reason() string {
	if o.failure != nil {
		return o.failure.GetMessage()
	}
	if e := o.result.GetException(); e != nil {
		return e.GetTypeName() + ": " + e.GetMessage()
	}
	return "ok"
}

// retryable says whether policy retries an attempt that ended so.
func retryable(o attemptOutcome, policy *atollv1.RetryPolicy, yielded bool) bool {
	if policy.GetMaxRetries() == 0 || yielded {
		return false
	}
	if o.failure == nil {
		return o.result.GetException() != nil && policy.GetRetryExceptions()
	}
	switch o.failure.GetKind() {
	case atollv1.FailureKind_FAILURE_KIND_WORKER_CRASHED:
		return true
	case atollv1.FailureKind_FAILURE_KIND_OUT_OF_MEMORY:
		return policy.GetRetryOutOfMemory()
	}
	return false
}

// attempt runs one attempt of a call, recorded as one run; it returns the
// run's id.
func (f *Functions) attempt(ctx context.Context, spec *callSpec, args callArgs, ev callEvents, callID string, attemptNo int) (attemptOutcome, string) {
	var rec *runRecord
	if f.opts.History != nil {
		rec = f.opts.History.BeginAttempt(spec.account, spec.req.GetFunctionName(), spec.mt.Name, callID, attemptNo)
	}
	runID := newRunID()
	if rec != nil {
		runID = rec.run.ID
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	f.running.add(runID, spec.account, cancel)
	defer f.running.remove(runID)

	var out attemptOutcome
	result, err := f.runOnce(ctx, spec, args, ev, rec, &out.yieldedAny)
	switch {
	case err != nil && errors.Is(context.Cause(ctx), errCancelledByRequest):
		out.failure = &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_CANCELLED,
			Message: fmt.Sprintf("run %s was cancelled (atoll cancel)", runID)}
	case err != nil && ctx.Err() != nil:
		out.failure = &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_CANCELLED, Message: "the caller cancelled the call"}
	case err != nil:
		out.failure = f.failure(err, spec.req)
	default:
		out.result = result
	}
	if rec != nil {
		rec.Finish(outcomeOf(out.result, out.failure))
	}
	return out, runID
}

// runOnce leases a worker and runs the call on it once.
func (f *Functions) runOnce(ctx context.Context, spec *callSpec, args callArgs, ev callEvents, rec *runRecord, yieldedAny *bool) (*atollv1.Result, error) {
	w, err := f.acquire(ctx, spec, ev)
	if err != nil {
		return nil, err
	}
	if rec != nil {
		rec.Started(w.WorkerID(), spec.key.EnvKey)
	}
	callCtx, cancel := context.WithTimeoutCause(ctx, spec.timeout, errTimedOut)
	defer cancel()
	req := workerproto.Request{
		Function: spec.req.GetFunction(), Arguments: args.inline, SharedArguments: args.shared, Env: spec.env,
		OnSharedValue: ev.sharedValue,
		OnOutput: func(o *atollv1.Output) {
			ev.output(o)
			if rec != nil {
				rec.Output(o)
			}
		},
	}
	if ev.yielded != nil {
		req.OnYield = func(b []byte) {
			*yieldedAny = true
			ev.yielded(b)
		}
	}
	result, err := w.CallWith(callCtx, req)
	var ser *scheduler.SerializationError
	switch {
	case err == nil, errors.As(err, &ser):
		f.opts.Scheduler.Release(w, keepAlive(spec.req))
	default:
		f.opts.Scheduler.Discard(w)
	}
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(callCtx), errTimedOut) {
		return nil, &TimeoutError{Limit: spec.timeout}
	}
	return result, err
}

// acquire leases a worker for the call. A warm call only names its
// environment (a few microseconds); the environment is resolved, and built
// if need be, only when no warm worker can take the call. What the worker
// runs is said in launcher-neutral terms: the launcher decides how.
func (f *Functions) acquire(ctx context.Context, spec *callSpec, ev callEvents) (*scheduler.Lease, error) {
	req, mt := spec.req, spec.mt
	return f.opts.Scheduler.Acquire(ctx, spec.key, func(ctx context.Context) (scheduler.WorkerSpec, func(), error) {
		ev.status(&atollv1.Status{Phase: atollv1.Phase_PHASE_BUILDING_ENVIRONMENT, Message: "building environment"})
		build := ev.build
		if build == nil {
			build = ev.output
		}
		var progress envbuild.Progress
		resolved, err := f.opts.Environments.Resolve(ctx, req.GetEnvironment(), func(line string) {
			build(&atollv1.Output{Stream: atollv1.Stream_STREAM_SYSTEM, Data: []byte(line + "\n")})
			if progress.Update(line) {
				ev.status(&atollv1.Status{Phase: atollv1.Phase_PHASE_BUILDING_ENVIRONMENT, Message: progress.String()})
			}
		})
		if err != nil {
			return scheduler.WorkerSpec{}, nil, err
		}
		ev.status(&atollv1.Status{Phase: atollv1.Phase_PHASE_STARTING_WORKER, Message: "starting worker"})
		return scheduler.WorkerSpec{
			Machine: mt,
			Environment: scheduler.Environment{
				Key:          resolved.Key,
				Python:       req.GetEnvironment().GetPythonVersion(),
				Requirements: req.GetEnvironment().GetRequirements(),
			},
			Data:               true,
			PreloadCloudpickle: req.GetNeedsCloudpickle(),
		}, resolved.Release, nil
	}, func() {
		pos := int32(1)
		if f.opts.Capacity != nil {
			pos = int32(f.opts.Capacity.Waiting()) + 1
		}
		ev.status(&atollv1.Status{Phase: atollv1.Phase_PHASE_QUEUED, QueuePosition: pos,
			Message: fmt.Sprintf("waiting for capacity for machine type %s", mt)})
	})
}
