package sandbox

import "errors"

var (
	// ErrUnsupported is returned by NewOCI where OCI containers cannot run
	// (not Linux, no cgroup memory controller).
	ErrUnsupported = errors.New("oci sandbox not supported on this host")
	// ErrRuntimeNotFound is returned when the OCI runtime binary is missing.
	ErrRuntimeNotFound = errors.New("oci runtime not found")
	// ErrInvalidSpec is returned for a worker spec the launcher refuses: a
	// bad ID, a relative agent path, or mounts that would expose protected
	// host paths.
	ErrInvalidSpec = errors.New("invalid worker spec")
	// ErrStartFailed is returned when the runtime ended before the worker's
	// container was running; the error carries the runtime's last output.
	ErrStartFailed = errors.New("worker failed to start")
	// ErrNotRunning is returned by Settle when the worker's container has
	// already exited.
	ErrNotRunning = errors.New("worker is not running")
)

// ErrNetworkUnavailable is returned where an isolated worker network
// cannot be made: no user-mode network stack, no network namespaces, or a
// stack that failed to start.
var ErrNetworkUnavailable = errors.New("isolated worker network unavailable")
