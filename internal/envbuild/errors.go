package envbuild

import (
	"errors"
	"strings"
)

var (
	// ErrUVNotFound means the uv binary could not be found or run.
	ErrUVNotFound = errors.New("uv not found")
	// ErrInvalidSpec means a Spec (its Python version or a requirement) or an
	// option is malformed; nothing was built.
	ErrInvalidSpec = errors.New("invalid environment spec")
	// ErrLocalRequirement means a requirement names a path, archive or
	// repository on this host (file:, git+file:, ./pkg, ../x, ~/x, /srv/x)
	// and Options.AllowLocalRequirements is off. It comes with
	// ErrInvalidSpec.
	ErrLocalRequirement = errors.New("local requirement")
	// ErrPythonUnavailable means no interpreter of the requested major.minor
	// exists on this host. The error is a *PythonUnavailableError.
	ErrPythonUnavailable = errors.New("python version unavailable")
	// ErrBuildFailed means uv failed to create the environment. The error is
	// a *BuildError carrying uv's own output.
	ErrBuildFailed = errors.New("environment build failed")
	// ErrClosed means the Builder was closed.
	ErrClosed = errors.New("environment builder closed")
)

// PythonUnavailableError names the version asked for and the versions this
// host can provide. Its message is safe to show the caller.
type PythonUnavailableError struct {
	Requested string   // major.minor asked for
	Available []string // major.minor versions found, ascending
}

func (e *PythonUnavailableError) Error() string {
	avail := "none"
	if len(e.Available) > 0 {
		avail = strings.Join(e.Available, ", ")
	}
	return "python " + e.Requested + " is not available (available: " + avail + ")"
}

func (e *PythonUnavailableError) Unwrap() error { return ErrPythonUnavailable }

// BuildError is a failed uv step. Output is uv's own error text, meant to be
// shown to the caller as is; Err is the process error (internal detail).
type BuildError struct {
	Step   string // "uv venv" or "uv pip install"
	Output string
	Err    error
}

func (e *BuildError) Error() string {
	msg := "environment build failed: " + e.Step
	if e.Output != "" {
		return msg + ": " + e.Output
	}
	if e.Err != nil {
		return msg + ": " + e.Err.Error()
	}
	return msg
}

func (e *BuildError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrBuildFailed}
	}
	return []error{ErrBuildFailed, e.Err}
}
