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
	"fmt"
	"log/slog"
	"math"
	"time"

	"google.golang.org/grpc"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/sealed"
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
	// Secrets, if set, opens the secrets calls name; without it a call
	// naming one fails.
	Secrets Secrets
	// MaxTimeout bounds every call's timeout and is the timeout of calls
	// that set none; 0 means DefaultMaxTimeout.
	MaxTimeout time.Duration
	// Running, if set, is shared with the Admin service so that runs can
	// be cancelled by id; NewFunctions makes one otherwise.
	Running *Running
	// OnCallersMachine says the service runs on the caller's own machine
	// (host=local's supervisor): its messages speak of this machine.
	OnCallersMachine bool
	Logger           *slog.Logger
}

// Functions implements atoll.v1.Functions.
type Functions struct {
	atollv1.UnimplementedFunctionsServer
	opts    Options
	log     *slog.Logger
	running *Running
}

// NewFunctions returns the Functions service.
func NewFunctions(opts Options) *Functions {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	running := opts.Running
	if running == nil {
		running = NewRunning()
	}
	return &Functions{opts: opts, log: log, running: running}
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
	var out callOutcome
	args := callArgs{inline: req.GetArguments()}
	var value *sealed.File
	shared, _ := stream.(SharedStream)
	if shared != nil {
		args.shared = shared.SharedArguments()
	}
	defer func() {
		if value != nil {
			value.Close()
		}
	}()
	spec, err := f.prepare(ctx, account, req)
	if err != nil {
		out.failure = f.failure(err, req)
		if f.opts.History != nil {
			f.opts.History.Begin(account, req.GetFunctionName(), req.GetMachineType()).Finish(outcomeOf(nil, out.failure))
		}
	} else {
		ev := callEvents{
			status: func(st *atollv1.Status) {
				_ = stream.Send(&atollv1.RunEvent{Event: &atollv1.RunEvent_Status{Status: st}})
			},
			output: func(o *atollv1.Output) {
				_ = stream.Send(&atollv1.RunEvent{Event: &atollv1.RunEvent_Output{Output: o}})
			},
			yielded: func(b []byte) {
				_ = stream.Send(&atollv1.RunEvent{Event: &atollv1.RunEvent_Yielded{Yielded: b}})
			},
		}
		if shared != nil && shared.SharesValues() {
			ev.sharedValue = func(f *sealed.File) {
				if value != nil {
					value.Close()
				}
				value = f
			}
		}
		out = f.call(ctx, spec, args, ev)
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case out.failure != nil:
		return stream.Send(&atollv1.RunEvent{Event: &atollv1.RunEvent_Failure{Failure: out.failure}})
	case value != nil && out.result.GetException() == nil:
		v := value
		value = nil // the stream's now
		return shared.SendSharedValue(v)
	}
	return stream.Send(&atollv1.RunEvent{Event: &atollv1.RunEvent_Result{Result: out.result}})
}

// SharedStream is a Run stream that carries large payloads in sealed
// memfds (a lean call from this machine): the arguments may have come in
// one, and a large value may go back in one.
type SharedStream interface {
	// SharedArguments is the call's arguments if they came in a sealed
	// memfd (the request's own arguments are then empty), else nil.
	SharedArguments() *sealed.File
	// SharesValues says the caller takes a value in a sealed memfd.
	SharesValues() bool
	// SendSharedValue sends the call's result, the value held in f, and
	// takes f over.
	SendSharedValue(f *sealed.File) error
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
