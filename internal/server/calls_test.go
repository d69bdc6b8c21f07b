package server

import (
	"testing"
	"time"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/machine"
)

func TestRetryable(t *testing.T) {
	crash := &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_WORKER_CRASHED}
	oom := &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_OUT_OF_MEMORY}
	timeout := &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_TIMEOUT}
	raised := &atollv1.Result{Outcome: &atollv1.Result_Exception{Exception: &atollv1.RemoteException{}}}
	two := &atollv1.RetryPolicy{MaxRetries: 2}
	tests := []struct {
		name    string
		out     attemptOutcome
		policy  *atollv1.RetryPolicy
		yielded bool
		want    bool
	}{
		{name: "crash", out: attemptOutcome{callOutcome: callOutcome{failure: crash}}, policy: two, want: true},
		{name: "no policy", out: attemptOutcome{callOutcome: callOutcome{failure: crash}}, policy: nil, want: false},
		{name: "oom by default", out: attemptOutcome{callOutcome: callOutcome{failure: oom}}, policy: two, want: false},
		{name: "oom asked", out: attemptOutcome{callOutcome: callOutcome{failure: oom}}, policy: &atollv1.RetryPolicy{MaxRetries: 1, RetryOutOfMemory: true}, want: true},
		{name: "timeout", out: attemptOutcome{callOutcome: callOutcome{failure: timeout}}, policy: two, want: false},
		{name: "user exception by default", out: attemptOutcome{callOutcome: callOutcome{result: raised}}, policy: two, want: false},
		{name: "user exception asked", out: attemptOutcome{callOutcome: callOutcome{result: raised}}, policy: &atollv1.RetryPolicy{MaxRetries: 1, RetryExceptions: true}, want: true},
		{name: "generator already yielded", out: attemptOutcome{callOutcome: callOutcome{failure: crash}}, policy: two, yielded: true, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryable(tt.out, tt.policy, tt.yielded); got != tt.want {
				t.Errorf("retryable = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTimeoutOf(t *testing.T) {
	f := NewFunctions(Options{MaxTimeout: time.Minute})
	tests := []struct {
		name string
		secs float64
		want time.Duration
		ok   bool
	}{
		{name: "unset is the maximum", secs: 0, want: time.Minute, ok: true},
		{name: "within", secs: 1.5, want: 1500 * time.Millisecond, ok: true},
		{name: "beyond the maximum", secs: 61},
		{name: "negative", secs: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.timeoutOf(&atollv1.RunRequest{TimeoutSeconds: tt.secs})
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("timeoutOf(%v) = %v, %v; want %v, ok=%v", tt.secs, got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestFits(t *testing.T) {
	host := machine.Host{CPUs: 2, MemoryBytes: 8 << 30}
	if got := fits(host, machine.Type{CPUs: 0.25, MemoryBytes: 256 << 20}); got != 8 {
		t.Errorf("XS on 2 CPUs = %d, want 8", got)
	}
	if got := fits(host, machine.Type{CPUs: 1, MemoryBytes: 6 << 30}); got != 1 {
		t.Errorf("memory-bound = %d, want 1", got)
	}
}

func TestCancelOtherAccountsRunIsNotFound(t *testing.T) {
	r := NewRunning()
	cancelled := false
	r.add("r-1", "acme", func(error) { cancelled = true })
	if err := r.Cancel("mallory", "r-1"); err == nil || cancelled {
		t.Fatalf("Cancel by another account = %v (cancelled %v)", err, cancelled)
	}
	if err := r.Cancel("acme", "r-1"); err != nil || !cancelled {
		t.Fatalf("Cancel = %v (cancelled %v)", err, cancelled)
	}
}
