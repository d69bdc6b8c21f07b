package scheduler

import (
	"errors"
	"fmt"
)

// ErrClosed is returned once the scheduler is shutting down.
var ErrClosed = errors.New("scheduler: shutting down")

// ErrLeaseSpent is returned by a Lease's Call after Release or Discard.
var ErrLeaseSpent = errors.New("scheduler: the worker lease was already given back")

// CrashError reports a worker that died instead of answering.
type CrashError struct {
	WorkerID string
	Exit     Exit
	Message  string
}

func (e *CrashError) Error() string {
	return fmt.Sprintf("worker %s crashed: %s", e.WorkerID, e.Message)
}

// SerializationError reports a return value the runner could not pickle.
type SerializationError struct {
	Message string
}

func (e *SerializationError) Error() string { return e.Message }
