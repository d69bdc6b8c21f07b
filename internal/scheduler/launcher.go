package scheduler

import (
	"context"

	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// WorkerSpec says what a worker is to run, in terms every launcher
// understands: never host paths, pipes or pod names. How to run it (which
// files a sandbox mounts, which image a pod uses) is each launcher's own
// business.
type WorkerSpec struct {
	// ID names the worker uniquely on this server (safe as a file name).
	ID string
	// Account owns the worker.
	Account string
	// Machine holds the limits to enforce.
	Machine machine.Type
	// Environment is the Python environment the function runs in.
	Environment Environment
	// Token authenticates the worker's nested calls as its account, for
	// as long as it lives ("" when the server issues none).
	Token string
	// Data asks for the account's persistent volume at /data.
	Data bool
	// GPUs are the indexes of the host GPUs assigned exclusively to the
	// worker.
	GPUs []int
	// PreloadCloudpickle has the worker's runner import cloudpickle as it
	// starts, on the start's full core, for a function whose pickle needs
	// it to load (atollv1.RunRequest.needs_cloudpickle); otherwise the
	// runner imports it only when a call first needs it.
	PreloadCloudpickle bool
}

// Environment names a built Python environment.
type Environment struct {
	// Key identifies it (see package envbuild).
	Key string
	// Python is its interpreter's major.minor version.
	Python string
	// Requirements are its pip requirement strings, for launchers that
	// resolve environments by what they hold rather than by key.
	Requirements []string
}

// Exit describes how a worker's agent ended.
type Exit struct {
	// Code is the exit code, or -1 when a signal ended it.
	Code int
	// Signal is the signal number that ended it, or 0.
	Signal int
	// OOMKilled reports that the kernel killed it for exceeding its memory.
	OOMKilled bool
}

// Process is a started worker.
type Process interface {
	// Conn returns the worker's protocol connection: at once when the
	// launcher handed the agent pipes, or once the worker has dialed back.
	// It fails when ctx ends or the worker ends first.
	Conn(ctx context.Context) (*workerproto.Conn, error)
	// Wait blocks until the worker has ended and its resources are released.
	Wait() (Exit, error)
	// Kill ends the worker at once. It is safe to call more than once and
	// after the worker has ended.
	Kill() error
}

// Launcher starts workers. The scheduler only ever talks to this
// interface; the local launcher (package sandbox) and cluster launchers
// implement it.
type Launcher interface {
	Start(ctx context.Context, spec WorkerSpec) (Process, error)
}

// Settler is a Process that starts with more CPU than its machine type
// allows, so the interpreter and runner start fast, and must be held to the
// type's limits before any call runs. The scheduler calls Settle once the
// worker is ready, before its first call.
type Settler interface {
	Settle() error
}

// Tokens issues the token a worker makes nested calls with, and revokes it
// when the worker has ended.
type Tokens interface {
	IssueWorkerToken(account, workerID string) string
	RevokeWorkerToken(workerID string)
}
