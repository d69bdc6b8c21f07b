package sandbox

import (
	"context"
	"io"

	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
)

// HostSpec is a worker as this host runs it: the agent's command line and
// the host files it may see. The local launcher derives it from the
// launcher-neutral scheduler.WorkerSpec; only this package deals in it.
type HostSpec struct {
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

// HostProcess is an agent started on this host.
type HostProcess interface {
	// Stdio joins the agent's standard output (read) and input (write).
	Stdio() io.ReadWriteCloser
	// Wait blocks until the agent has ended and its resources are released.
	Wait() (scheduler.Exit, error)
	// Kill ends the agent at once; safe to call more than once.
	Kill() error
}

// HostLauncher starts agents on this host: OCILauncher in a container,
// ProcessLauncher as plain processes. LocalLauncher puts one to work.
type HostLauncher interface {
	Start(ctx context.Context, spec HostSpec) (HostProcess, error)
}

var (
	_ HostLauncher = (*OCILauncher)(nil)
	_ HostLauncher = (*ProcessLauncher)(nil)
)
