package envbuild

import (
	"context"
	"fmt"
)

// Sandbox runs a build's uv steps away from the host (package sandbox has
// the OCI one). A build opens one session per phase and runs its steps in
// it; the session sees of the host only what its BuildView names.
//
// Without a Sandbox, uv runs as a plain child of this process, with its
// privileges and its view of the host: a package's build code (setup.py)
// can then read and write everything this process can.
type Sandbox interface {
	Open(ctx context.Context, view BuildView) (BuildSession, error)
}

// BuildView is what one build session sees of the host. Every path is an
// absolute host path, seen at the same path inside.
type BuildView struct {
	// ID names the session uniquely on this host (safe as a file name).
	ID string
	// Writable are directories the session sees read-write. Only what
	// Owned names is the session's to write: the rest of them keeps the
	// host's permissions.
	Writable []string
	// Hidden are directories under a Writable one the session must not
	// see at all (other environments, under the builder's root).
	Hidden []string
	// Owned are directories under Writable that the session's user must be
	// able to write; the sandbox makes them its user's. Recursive names
	// those whose whole tree must be, for a directory such as the uv
	// cache that earlier sessions (or an older atoll) filled.
	Owned     []string
	Recursive []string
	// ReadOnly are host paths the steps need to read: the interpreter's
	// prefix, the uv binary, local requirements.
	ReadOnly []string
	// Env is the steps' environment ("KEY=value").
	Env []string
}

// BuildSession runs steps in one sandbox, one at a time. Close ends it
// and everything still running in it.
type BuildSession interface {
	// Run runs args (args[0] absolute) in dir, handing each line of its
	// merged stdout and stderr to out as it appears. A step that ran and
	// failed returns an error with an ExitCode() int method, as
	// *exec.ExitError and *ExitError have. When ctx ends, the session is
	// ended with the step.
	Run(ctx context.Context, dir string, args []string, out func(line string)) error
	Close() error
}

// ExitError is a sandboxed step that ran and exited unsuccessfully.
type ExitError struct {
	Code int
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// ExitCode is the step's exit status (128+N for signal N).
func (e *ExitError) ExitCode() int { return e.Code }
