package server

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/state"
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
		{"no capacity", fmt.Errorf("%w: no room", scheduler.ErrNoCapacity), atollv1.FailureKind_FAILURE_KIND_NO_CAPACITY, "try again later"},
		{"build", envError(&envbuild.BuildError{Step: "uv pip install", Output: "error: no such package"}), atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD, "requirements [\"nope\"]:\nerror: no such package"},
		{"python", envError(&envbuild.PythonUnavailableError{Requested: "3.99", Available: []string{"3.11"}}), atollv1.FailureKind_FAILURE_KIND_PYTHON_UNAVAILABLE, "cannot run Python 3.99, the caller's version (it has: 3.11)"},
		{"oom", &scheduler.CrashError{Exit: scheduler.Exit{Code: -1, Signal: 9, OOMKilled: true}}, atollv1.FailureKind_FAILURE_KIND_OUT_OF_MEMORY, "machine type XS allows 256 MiB; use a larger machine_type"},
		{"crash", &scheduler.CrashError{Exit: scheduler.Exit{Code: 3}, Message: "exit status 3"}, atollv1.FailureKind_FAILURE_KIND_WORKER_CRASHED, "exit status 3"},
		{"serialization", &scheduler.SerializationError{Message: "cannot pickle"}, atollv1.FailureKind_FAILURE_KIND_SERIALIZATION, "cannot pickle"},
		{"shutdown", scheduler.ErrClosed, atollv1.FailureKind_FAILURE_KIND_CANCELLED, "shutting down"},
		{"other", errors.New("disk on fire"), atollv1.FailureKind_FAILURE_KIND_INTERNAL, "disk on fire"},
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
