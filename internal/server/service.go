// Package server owns every gRPC service of atoll: Functions (a call: check
// it, name its environment, lease a worker from the scheduler, stream its
// output and outcome back), Storage (sync_dir into /data), Admin (status,
// workers, run history) and the run history writer. errors.go is the one
// place that maps domain errors to failure kinds and status codes, and Error
// keeps the text a caller may read apart from internal detail, which only
// the log sees. The edge is here too: limits.go holds connections that have
// not authenticated to small bounds, and validate.go checks every request
// field's bound and refuses undecodable messages, before any handler runs
// (docs/limits.md).
//
// It holds no scheduling, building, storage or sandbox logic itself, and it
// never decides who the caller is: internal/auth's interceptors do, and a
// handler without an authenticated caller fails.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"google.golang.org/grpc"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
)

// MaxMessageBytes bounds one gRPC message, and so a call's serialized
// function plus arguments, or its result.
const MaxMessageBytes = math.MaxInt32

// Environment is an environment built and held for a worker.
type Environment struct {
	// Key identifies the environment (part of the warm-pool key).
	Key string
	// Release is called when the worker using the environment ends.
	Release func()
}

// Environments resolves a call's environment spec.
type Environments interface {
	// Key names the environment of spec without building anything.
	Key(spec *atollv1.Environment) (string, error)
	// Resolve builds the environment if needed, sending build output to
	// logf line by line, and holds it until the returned Release; the
	// launcher finds it by its spec.
	Resolve(ctx context.Context, spec *atollv1.Environment, logf func(string)) (Environment, error)
}

// Options configures the Functions service.
type Options struct {
	Catalog machine.Catalog
	// Capacity, if set, rejects machine types the host can never fit.
	Capacity     *machine.Capacity
	Environments Environments
	Scheduler    *scheduler.Scheduler
	// History, if set, records every run.
	History *History
	// OnCallersMachine says the service runs on the caller's own machine
	// (host=local's supervisor): its messages speak of this machine.
	OnCallersMachine bool
	Logger           *slog.Logger
}

// Functions implements atoll.v1.Functions.
type Functions struct {
	atollv1.UnimplementedFunctionsServer
	opts Options
	log  *slog.Logger
}

// NewFunctions returns the Functions service.
func NewFunctions(opts Options) *Functions {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Functions{opts: opts, log: log}
}

// Register adds the service to a gRPC server.
func (f *Functions) Register(s *grpc.Server) {
	atollv1.RegisterFunctionsServer(s, f)
}

type runStream = grpc.ServerStreamingServer[atollv1.RunEvent]

// Run executes one call. Every outcome, success or failure, is sent as the
// stream's last event; gRPC status errors are left for transport and
// authentication problems.
func (f *Functions) Run(req *atollv1.RunRequest, stream runStream) error {
	ctx := stream.Context()
	if f.log.Enabled(ctx, slog.LevelDebug) {
		defer func(start time.Time) {
			f.log.Debug("call served", "function", req.GetFunctionName(), "took", time.Since(start))
		}(time.Now())
	}
	account, err := accountOf(ctx)
	if err != nil {
		return rpcStatus(f.log, err)
	}
	var rec *runRecord
	if f.opts.History != nil {
		rec = f.opts.History.Begin(account, req.GetFunctionName(), req.GetMachineType())
	}
	result, err := f.run(ctx, account, req, stream, rec)
	var failure *atollv1.Failure
	switch {
	case err != nil && ctx.Err() != nil:
		failure = &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_CANCELLED, Message: "the caller cancelled the call"}
	case err != nil:
		failure = f.failure(err, req)
	}
	if rec != nil {
		rec.Finish(outcomeOf(result, failure))
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case failure != nil:
		return stream.Send(&atollv1.RunEvent{Event: &atollv1.RunEvent_Failure{Failure: failure}})
	}
	return stream.Send(&atollv1.RunEvent{Event: &atollv1.RunEvent_Result{Result: result}})
}

func sendStatus(stream runStream, phase atollv1.Phase, msg string) {
	_ = stream.Send(&atollv1.RunEvent{Event: &atollv1.RunEvent_Status{Status: &atollv1.Status{Phase: phase, Message: msg}}})
}

func (f *Functions) run(ctx context.Context, account string, req *atollv1.RunRequest, stream runStream, rec *runRecord) (*atollv1.Result, error) {
	if err := validate(req); err != nil {
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
	key := scheduler.PoolKey{Account: account, Function: req.GetFunctionName(), MachineType: mt.Name}
	w, err := f.acquire(ctx, &key, req, mt, stream)
	if err != nil {
		return nil, err
	}
	if rec != nil {
		rec.Started(w.WorkerID(), key.EnvKey)
	}
	result, err := w.Call(ctx, req.GetFunction(), req.GetArguments(), func(o *atollv1.Output) {
		_ = stream.Send(&atollv1.RunEvent{Event: &atollv1.RunEvent_Output{Output: o}})
		if rec != nil {
			rec.Output(o)
		}
	})
	var ser *scheduler.SerializationError
	switch {
	case err == nil, errors.As(err, &ser):
		f.opts.Scheduler.Release(w, keepAlive(req))
	default:
		f.opts.Scheduler.Discard(w)
	}
	return result, err
}

// acquire leases a worker for the call. A warm call only names its
// environment (a few microseconds); the environment is resolved, and built
// if need be, only when no warm worker can take the call. What the worker
// runs is said in launcher-neutral terms: the launcher decides how.
func (f *Functions) acquire(ctx context.Context, key *scheduler.PoolKey, req *atollv1.RunRequest, mt machine.Type, stream runStream) (*scheduler.Lease, error) {
	envKey, err := f.opts.Environments.Key(req.GetEnvironment())
	if err != nil {
		return nil, err
	}
	key.EnvKey = envKey
	return f.opts.Scheduler.Acquire(ctx, *key, func(ctx context.Context) (scheduler.WorkerSpec, func(), error) {
		sendStatus(stream, atollv1.Phase_PHASE_BUILDING_ENVIRONMENT, "building environment")
		var progress envbuild.Progress
		resolved, err := f.opts.Environments.Resolve(ctx, req.GetEnvironment(), func(line string) {
			_ = stream.Send(&atollv1.RunEvent{Event: &atollv1.RunEvent_Output{Output: &atollv1.Output{
				Stream: atollv1.Stream_STREAM_SYSTEM, Data: []byte(line + "\n"),
			}}})
			if progress.Update(line) {
				sendStatus(stream, atollv1.Phase_PHASE_BUILDING_ENVIRONMENT, progress.String())
			}
		})
		if err != nil {
			return scheduler.WorkerSpec{}, nil, err
		}
		sendStatus(stream, atollv1.Phase_PHASE_STARTING_WORKER, "starting worker")
		return scheduler.WorkerSpec{
			Machine: mt,
			Environment: scheduler.Environment{
				Key:          resolved.Key,
				Python:       req.GetEnvironment().GetPythonVersion(),
				Requirements: req.GetEnvironment().GetRequirements(),
			},
			Data: true,
		}, resolved.Release, nil
	}, func() {
		sendStatus(stream, atollv1.Phase_PHASE_QUEUED, fmt.Sprintf("waiting for capacity for machine type %s", mt))
	})
}

func keepAlive(req *atollv1.RunRequest) time.Duration {
	return time.Duration(req.GetKeepAliveSeconds() * float64(time.Second))
}

func validate(req *atollv1.RunRequest) error {
	switch {
	case len(req.GetFunction()) == 0:
		return invalid("the request carries no function")
	case req.GetKeepAliveSeconds() < 0 || math.IsNaN(req.GetKeepAliveSeconds()):
		return invalid(fmt.Sprintf("keep_alive must be 0 or more seconds, got %v", req.GetKeepAliveSeconds()))
	case req.GetEnvironment().GetPythonVersion() == "":
		return invalid("the request does not say which Python version the caller runs")
	}
	return nil
}
