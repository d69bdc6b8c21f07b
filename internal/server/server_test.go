package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/state"
	"github.com/atoll-dev/atoll/internal/storage"
)

func TestFailureMapping(t *testing.T) {
	f := NewFunctions(Options{Catalog: machine.Defaults()})
	req := &atollv1.RunRequest{MachineType: "XS", Environment: &atollv1.Environment{Requirements: []string{"nope"}}}
	_, unknownType := machine.Defaults().Lookup("XXL")
	tests := []struct {
		name     string
		err      error
		kind     atollv1.FailureKind
		contains string
	}{
		{"unknown type", unknownType, atollv1.FailureKind_FAILURE_KIND_UNKNOWN_MACHINE_TYPE, `unknown machine type "XXL"`},
		{"never fits", fmt.Errorf("%w: machine type XL needs 8 CPU", machine.ErrNeverFits), atollv1.FailureKind_FAILURE_KIND_UNKNOWN_MACHINE_TYPE, "choose a smaller machine_type"},
		{"no capacity", fmt.Errorf("%w: no room", machine.ErrNoCapacity), atollv1.FailureKind_FAILURE_KIND_NO_CAPACITY, "try again later"},
		{"build", &envbuild.BuildError{Step: "uv pip install", Output: "error: no such package"}, atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD, "requirements [\"nope\"]:\nerror: no such package"},
		{"python", &envbuild.PythonUnavailableError{Requested: "3.99", Available: []string{"3.11"}}, atollv1.FailureKind_FAILURE_KIND_PYTHON_UNAVAILABLE, "cannot run Python 3.99, the caller's version (it has: 3.11)"},
		{"oom", &scheduler.CrashError{Exit: scheduler.Exit{Code: -1, Signal: 9, OOMKilled: true}}, atollv1.FailureKind_FAILURE_KIND_OUT_OF_MEMORY, "machine type XS allows 256 MiB; use a larger machine_type"},
		{"crash", &scheduler.CrashError{Exit: scheduler.Exit{Code: 3}, Message: "exit status 3"}, atollv1.FailureKind_FAILURE_KIND_WORKER_CRASHED, "exit status 3"},
		{"serialization", &scheduler.SerializationError{Message: "cannot pickle"}, atollv1.FailureKind_FAILURE_KIND_SERIALIZATION, "cannot pickle"},
		{"shutdown", scheduler.ErrClosed, atollv1.FailureKind_FAILURE_KIND_CANCELLED, "shutting down"},
		{"other", errors.New("open /srv/atoll/state.db: disk on fire"), atollv1.FailureKind_FAILURE_KIND_INTERNAL, "internal server error"},
		{"public", &Error{Public: "the worker's bundle could not be written", Err: errors.New("open /srv/x: disk on fire")}, atollv1.FailureKind_FAILURE_KIND_INTERNAL, "bundle could not be written"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := f.failure(tt.err, req)
			if got.GetKind() != tt.kind {
				t.Errorf("kind = %v, want %v", got.GetKind(), tt.kind)
			}
			if !strings.Contains(got.GetMessage(), tt.contains) {
				t.Errorf("message %q lacks %q", got.GetMessage(), tt.contains)
			}
			if strings.Contains(got.GetMessage(), "disk on fire") {
				t.Errorf("message %q shows internal detail to the caller", got.GetMessage())
			}
		})
	}
}

func TestOutcomeOf(t *testing.T) {
	exc := &atollv1.Result{Outcome: &atollv1.Result_Exception{Exception: &atollv1.RemoteException{}}}
	val := &atollv1.Result{Outcome: &atollv1.Result_Value{Value: []byte("x")}}
	tests := []struct {
		name    string
		result  *atollv1.Result
		failure *atollv1.Failure
		want    state.Outcome
		exit    *int
	}{
		{"ok", val, nil, state.OutcomeOK, nil},
		{"raised", exc, nil, state.OutcomeError, nil},
		{"crashed", nil, &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_WORKER_CRASHED, ExitCode: 3}, state.OutcomeCrashed, ptr(3)},
		{"oom", nil, &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_OUT_OF_MEMORY, ExitCode: -1}, state.OutcomeOOM, ptr(-1)},
		{"build", nil, &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD}, state.OutcomeBuildFailed, nil},
		{"queue", nil, &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_NO_CAPACITY}, state.OutcomeTimeout, nil},
		{"cancelled", nil, &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_CANCELLED}, state.OutcomeCancelled, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, exit := outcomeOf(tt.result, tt.failure)
			if got != tt.want || !cmp.Equal(exit, tt.exit) {
				t.Errorf("outcomeOf = %v, %v; want %v, %v", got, exit, tt.want, tt.exit)
			}
		})
	}
}

func ptr(i int) *int { return &i }

func TestNoCallerIsNoAccount(t *testing.T) {
	if _, err := accountOf(context.Background()); !errors.Is(err, auth.ErrNoPrincipal) {
		t.Fatalf("accountOf(no caller) = %v, want ErrNoPrincipal", err)
	}
	got, err := accountOf(auth.NewContext(context.Background(), auth.Principal{Account: "acme", KeyID: "k"}))
	if err != nil || got != "acme" {
		t.Fatalf("accountOf(acme's key) = %q, %v", got, err)
	}
	admin := NewAdmin(AdminOptions{Catalog: machine.Defaults()})
	if _, err := admin.Status(context.Background(), &atollv1.StatusRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Status without a caller = %v, want Unauthenticated", err)
	}
}

func TestRPCStatusHidesInternalDetail(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		code     codes.Code
		contains string
	}{
		{"domain", fmt.Errorf("%w: /data/x is a directory", storage.ErrConflict), codes.FailedPrecondition, "/data/x is a directory"},
		{"public", &Error{Public: "the run history is unavailable", Err: errors.New("open /srv/state.db: disk on fire")}, codes.Internal, "run history is unavailable"},
		{"other", errors.New("open /srv/state.db: disk on fire"), codes.Internal, "internal server error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := status.Convert(rpcStatus(slog.New(slog.DiscardHandler), tt.err))
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.contains) || strings.Contains(st.Message(), "disk on fire") {
				t.Errorf("status = %v %q, want %v containing %q and no internal detail", st.Code(), st.Message(), tt.code, tt.contains)
			}
		})
	}
}
