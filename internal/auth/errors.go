package auth

import "errors"

// ErrUnauthenticated is wrapped by every error that means "these
// credentials do not let you in". The text of such an error is written for
// the caller and is safe to show: it never says whether a key id exists.
var ErrUnauthenticated = errors.New("unauthenticated")

// Credential failures. Wrong secret, unknown id and revoked key share one
// message so that a caller cannot probe which key ids exist.
var (
	errMissingCredentials = &credentialError{"missing API key: send a key id and secret " +
		"(ATOLL_KEY_ID and ATOLL_KEY_SECRET); create one with `atoll keys create`"}
	errInvalidKey = &credentialError{"invalid API key: the key id or secret is wrong, " +
		"or the key was revoked; create one with `atoll keys create`"}
	errInvalidWorkerToken   = &credentialError{"invalid worker token: the worker it was issued to has stopped"}
	errAmbiguousCredentials = &credentialError{"send either an API key or a worker token, not both"}
)

// errWorkerTokenScope refuses a worker token outside WorkerTokenScope. It
// is not ErrUnauthenticated: the token is good, the method is not for it.
var errWorkerTokenScope = errors.New("a worker token may only run isolated functions (nested calls); " +
	"run history, workers, storage and administration need an API key (ATOLL_KEY_ID and ATOLL_KEY_SECRET)")

// ErrNoPrincipal means a handler ran with no authenticated caller in its
// context: a server wired without interceptors, or a method exempted from
// authentication that should not have been. It is a server bug, never an
// account.
var ErrNoPrincipal = errors.New("no authenticated caller")

// ErrPeerRefused means a unix-socket peer runs as another user than the
// one the socket serves.
var ErrPeerRefused = errors.New("peer runs as another user")

// credentialError is a caller-facing credential failure; it is
// ErrUnauthenticated under errors.Is but reads without that prefix.
type credentialError struct{ msg string }

func (e *credentialError) Error() string        { return e.msg }
func (e *credentialError) Is(target error) bool { return target == ErrUnauthenticated }
