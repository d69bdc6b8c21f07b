package supervisor

import "errors"

var (
	// ErrUnsafeDir means the supervisor's directory is not private to this
	// user (another owner, or open to group or others): its socket would let
	// someone else run code as this user.
	ErrUnsafeDir = errors.New("supervisor directory is not private")
	// ErrRunning means another supervisor already serves this cache
	// directory.
	ErrRunning = errors.New("a supervisor already runs")
)
