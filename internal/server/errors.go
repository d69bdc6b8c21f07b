package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/secrets"
	"github.com/atoll-dev/atoll/internal/state"
	"github.com/atoll-dev/atoll/internal/storage"
)

// ErrInvalidRequest marks a request the SDK should never have sent.
var ErrInvalidRequest = errors.New("invalid request")

// ErrRunNotFound is a cancel of a run that is not in progress.
var ErrRunNotFound = errors.New("run not found")

// errCancelledByRequest is the cause of a run stopped by CancelRun, and
// errTimedOut of one that ran past its timeout.
var (
	errCancelledByRequest = errors.New("cancelled by request")
	errTimedOut           = errors.New("the call timed out")
)

// TimeoutError reports a function that ran past its timeout; its worker
// was killed.
type TimeoutError struct {
	Limit time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("the function ran past its timeout of %s and was stopped (its worker was killed)", e.Limit)
}

// Error is an error with two texts: Public, written for the caller, and the
// wrapped error, internal detail (paths, syscalls) that only the server's
// log sees. Errors that are not an Error and not a known domain error reach
// callers as "internal server error" and nothing more.
type Error struct {
	Public string
	Err    error
}

func (e *Error) Error() string { return e.Public }

func (e *Error) Unwrap() error { return e.Err }

// publicError returns an Error whose text is safe to show the caller.
func publicError(err error, format string, args ...any) error {
	return &Error{Public: fmt.Sprintf(format, args...), Err: err}
}

func invalid(msg string) error {
	return &Error{Public: msg, Err: ErrInvalidRequest}
}

// accountOf returns the account a request acts for. A context without an
// authenticated caller is a wiring bug (a service registered without the
// auth interceptors), refused rather than given some account.
func accountOf(ctx context.Context) (string, error) {
	if p, ok := auth.PrincipalFrom(ctx); ok && p.Account != "" {
		return p.Account, nil
	}
	return "", auth.ErrNoPrincipal
}

// failure maps an error of a run to the Failure the SDK turns into an
// exception. The message is what the user reads: it says what happened and
// what to do.
func (f *Functions) failure(err error, req *atollv1.RunRequest) *atollv1.Failure {
	mt := req.GetMachineType()
	var crash *scheduler.CrashError
	var ser *scheduler.SerializationError
	var public *Error
	var timeout *TimeoutError
	switch {
	case errors.As(err, &timeout):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_TIMEOUT, MachineType: mt, Message: timeout.Error() +
			"; raise the call's timeout= if it needs longer"}
	case errors.Is(err, secrets.ErrNotFound):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_SECRET_NOT_FOUND, Message: err.Error()}
	case errors.Is(err, machine.ErrNeverFits):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_UNKNOWN_MACHINE_TYPE, MachineType: mt, Message: fmt.Sprintf(
			"%v; choose a smaller machine_type, or run the server on a host that fits it", err)}
	case errors.Is(err, machine.ErrNoCapacity):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_NO_CAPACITY, MachineType: mt, Message: fmt.Sprintf(
			"%v; try again later, use a smaller machine_type, or give the server more capacity", err)}
	case errors.Is(err, machine.ErrUnknownType):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_UNKNOWN_MACHINE_TYPE, Message: err.Error(), MachineType: mt}
	case errors.Is(err, ErrInvalidRequest):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_INVALID_REQUEST, Message: err.Error()}
	case errors.Is(err, envbuild.ErrPythonUnavailable):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_PYTHON_UNAVAILABLE, Message: f.pythonUnavailable(err)}
	case errors.Is(err, envbuild.ErrBuildFailed):
		detail := err.Error()
		var be *envbuild.BuildError
		if errors.As(err, &be) && be.Output != "" {
			detail = be.Output
		}
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD, Message: fmt.Sprintf(
			"could not build the environment for requirements %q:\n%s", req.GetEnvironment().GetRequirements(), detail)}
	case errors.Is(err, envbuild.ErrInvalidSpec):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD, Message: err.Error()}
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
	case errors.As(err, &public):
		f.log.Error("run failed", "function", req.GetFunctionName(), "err", err, "detail", public.Err)
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_INTERNAL, Message: public.Public}
	default:
		f.log.Error("run failed", "function", req.GetFunctionName(), "err", err)
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_INTERNAL, Message: "internal server error; the server's log has the details"}
	}
}

// pythonUnavailable words a missing interpreter for where the service runs.
func (f *Functions) pythonUnavailable(err error) string {
	var pu *envbuild.PythonUnavailableError
	if !errors.As(err, &pu) {
		return err.Error()
	}
	avail := "none"
	if len(pu.Available) > 0 {
		avail = strings.Join(pu.Available, ", ")
	}
	if f.opts.OnCallersMachine {
		return fmt.Sprintf("host=local needs a CPython %s interpreter installed on this machine, the caller's version, "+
			"and uv finds none (it finds: %s); install Python %s system-wide or with pyenv", pu.Requested, avail, pu.Requested)
	}
	return fmt.Sprintf("this server cannot run Python %s, the caller's version (it has: %s); "+
		"call from one of those versions, or install Python %s on the server", pu.Requested, avail, pu.Requested)
}

func (f *Functions) memoryOf(name string) string {
	t, err := f.opts.Catalog.Lookup(name)
	if err != nil {
		return "its limit"
	}
	return machine.FormatBytes(t.MemoryBytes)
}

// rpcStatus maps an error of a unary or upload service (Admin, Storage) to
// the gRPC status the SDK and CLI turn into errors. Domain errors carry
// messages meant for the caller; anything else is logged and reported
// without detail, since it may name server paths.
func rpcStatus(log *slog.Logger, err error, attrs ...any) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	var code codes.Code
	var public *Error
	switch {
	case errors.Is(err, auth.ErrNoPrincipal):
		log.Error("request without an authenticated caller", append(attrs, "err", err)...)
		return status.Error(codes.Unauthenticated, "this request carries no credentials the server accepted")
	case errors.Is(err, storage.ErrInvalidPath), errors.Is(err, storage.ErrInvalidManifest), errors.Is(err, storage.ErrInvalidAccount),
		errors.Is(err, ErrInvalidRequest), errors.Is(err, secrets.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, storage.ErrConflict):
		code = codes.FailedPrecondition
	case errors.Is(err, storage.ErrQuotaExceeded):
		code = codes.ResourceExhausted
	case errors.Is(err, storage.ErrUnknownSync), errors.Is(err, state.ErrNotFound), errors.Is(err, ErrRunNotFound),
		errors.Is(err, secrets.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, storage.ErrContentMismatch):
		code = codes.Aborted
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "the request was cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the request ran out of time")
	case errors.As(err, &public):
		log.Error("request failed", append(attrs, "err", public.Err)...)
		return status.Error(codes.Internal, public.Public)
	default:
		log.Error("request failed", append(attrs, "err", err)...)
		return status.Error(codes.Internal, "internal server error; the server's log has the details")
	}
	return status.Error(code, err.Error())
}
