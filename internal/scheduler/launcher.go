package scheduler

import (
	"context"
	"io"

	"github.com/atoll-dev/atoll/internal/machine"
)

// WorkerSpec is everything a launcher needs to start one worker: the agent's
// command line and the resources and files the worker may see.
type WorkerSpec struct {
	// ID names the worker uniquely on this server (safe as a file name).
	ID string
	// Account owns the worker.
	Account string
	// Machine holds the limits to enforce.
	Machine machine.Type
	// Args is the agent's argv: Args[0] is the atoll binary's absolute path,
	// valid both on the host and inside the sandbox (launchers mount it at
	// the same path).
	Args []string
	// Env is the agent's environment ("KEY=value").
	Env []string
	// ReadOnlyPaths are host paths the worker must see read-only at the same
	// path: the Python prefix, the venv, the runtime support directory.
	ReadOnlyPaths []string
	// DataDir, when set, is the account's persistent directory, to be seen
	// read-write at /data.
	DataDir string
	// GPUs are the indexes of the host GPUs assigned exclusively to the worker.
	GPUs []int
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

// Process is a started worker. Its agent speaks the worker protocol on
// Conn (its standard input and output).
type Process interface {
	// Conn carries the worker protocol: writes go to the agent's standard
	// input, reads come from its standard output.
	Conn() io.ReadWriteCloser
	// Wait blocks until the worker has ended and its resources are released.
	Wait() (Exit, error)
	// Kill ends the worker at once. It is safe to call more than once and
	// after the worker has ended.
	Kill() error
}

// Launcher starts workers. The scheduler only ever talks to this interface;
// the sandbox package and any cluster launcher implement it.
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
