package server

import (
	"errors"
	"fmt"
	"strings"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
)

// ErrInvalidRequest marks a request the SDK should never have sent.
var ErrInvalidRequest = errors.New("invalid request")

// ErrPythonUnavailable marks a Python version the server cannot provide.
var ErrPythonUnavailable = errors.New("python version unavailable")

// ErrEnvironmentBuild marks an environment that failed to build.
var ErrEnvironmentBuild = errors.New("environment build failed")

// ErrInvalidRequirements marks requirement strings that cannot be used.
var ErrInvalidRequirements = errors.New("invalid requirements")

func invalid(msg string) error {
	return fmt.Errorf("%w: %s", ErrInvalidRequest, msg)
}

// failure maps an error of a run to the Failure the SDK turns into an
// exception. The message is what the user reads: it says what happened and
// what to do.
func (f *Functions) failure(err error, req *atollv1.RunRequest) *atollv1.Failure {
	mt := req.GetMachineType()
	var crash *scheduler.CrashError
	var ser *scheduler.SerializationError
	switch {
	case errors.Is(err, machine.ErrNeverFits):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_UNKNOWN_MACHINE_TYPE, MachineType: mt, Message: fmt.Sprintf(
			"%v; choose a smaller machine_type, or run the server on a host that fits it", err)}
	case errors.Is(err, scheduler.ErrNoCapacity):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_NO_CAPACITY, MachineType: mt, Message: fmt.Sprintf(
			"%v; try again later, use a smaller machine_type, or give the server more capacity", err)}
	case errors.Is(err, machine.ErrUnknownType):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_UNKNOWN_MACHINE_TYPE, Message: err.Error(), MachineType: mt}
	case errors.Is(err, ErrInvalidRequest):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_INVALID_REQUEST, Message: err.Error()}
	case errors.Is(err, ErrPythonUnavailable):
		msg := err.Error()
		var pu *envbuild.PythonUnavailableError
		if errors.As(err, &pu) {
			msg = fmt.Sprintf("this server cannot run Python %s, the caller's version (it has: %s); "+
				"call from one of those versions, or install Python %s on the server",
				pu.Requested, strings.Join(pu.Available, ", "), pu.Requested)
		}
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_PYTHON_UNAVAILABLE, Message: msg}
	case errors.Is(err, ErrInvalidRequirements):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD, Message: err.Error()}
	case errors.Is(err, ErrEnvironmentBuild):
		detail := err.Error()
		var be *envbuild.BuildError
		if errors.As(err, &be) && be.Output != "" {
			detail = be.Output
		}
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD, Message: fmt.Sprintf(
			"could not build the environment for requirements %q:\n%s", req.GetEnvironment().GetRequirements(), detail)}
	case errors.As(err, &ser):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_SERIALIZATION, Message: ser.Message}
	case errors.As(err, &crash) && crash.Exit.OOMKilled:
		return &atollv1.Failure{
			Kind: atollv1.FailureKind_FAILURE_KIND_OUT_OF_MEMORY,
			Message: fmt.Sprintf("the worker ran out of memory: machine type %s allows %s; "+
				"use a larger machine_type or use less memory", mt, f.memoryOf(mt)),
			ExitCode: int32(crash.Exit.Code), Signal: int32(crash.Exit.Signal), MachineType: mt,
		}
	case errors.As(err, &crash):
		return &atollv1.Failure{
			Kind:     atollv1.FailureKind_FAILURE_KIND_WORKER_CRASHED,
			Message:  crash.Message,
			ExitCode: int32(crash.Exit.Code), Signal: int32(crash.Exit.Signal), MachineType: mt,
		}
	case errors.Is(err, scheduler.ErrClosed):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_CANCELLED, Message: "the server is shutting down; try again once it is back"}
	default:
		f.log.Error("run failed", "function", req.GetFunctionName(), "err", err)
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_INTERNAL, Message: fmt.Sprintf("internal server error: %v", err)}
	}
}

func (f *Functions) memoryOf(name string) string {
	t, err := f.opts.Catalog.Lookup(name)
	if err != nil {
		return "its limit"
	}
	return machine.FormatBytes(t.MemoryBytes)
}
