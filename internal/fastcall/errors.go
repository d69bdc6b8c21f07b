package fastcall

import "errors"

// ErrFrameTooLarge is a frame whose declared length is beyond the bound for
// its type: nothing of it is allocated or read.
var ErrFrameTooLarge = errors.New("frame too large")

// ErrUnexpectedFrame is a frame of a type not allowed at that point of the
// protocol (a call before the hello, a second call while one runs, a type
// the peer may not send).
var ErrUnexpectedFrame = errors.New("unexpected frame")

// ErrBadHello is a hello frame that does not decode, or speaks another
// version of the protocol.
var ErrBadHello = errors.New("bad hello")

// ErrShuttingDown refuses a call that arrives after the server began to
// stop.
var ErrShuttingDown = errors.New("the atoll server is shutting down")
