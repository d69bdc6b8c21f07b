package workerproto

import (
	"errors"
	"fmt"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

var (
	// ErrProtocol is returned when the peer broke the protocol: a length
	// past its bound, a message out of place, a frame cut short. The
	// caller must kill the worker.
	ErrProtocol = errors.New("worker protocol violation")
	// ErrClosed is returned when the stream ended before the answer came.
	ErrClosed = errors.New("worker connection closed")
	// ErrBusy is returned by Call while another call is in progress.
	ErrBusy = errors.New("worker connection busy with another call")
	// ErrRefused is returned by Dial when the server refused the token.
	ErrRefused = errors.New("server refused the worker token")
)

// FailureError is a failure the agent reported: its runner died (kind
// WORKER_CRASHED, with its exit status) or a value could not be serialized
// (kind SERIALIZATION; the agent and its runner live on).
type FailureError struct {
	Failure *atollv1.Failure
}

func (e *FailureError) Error() string {
	return fmt.Sprintf("worker failure (%s): %s", e.Failure.GetKind(), e.Failure.GetMessage())
}
