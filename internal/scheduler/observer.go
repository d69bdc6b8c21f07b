package scheduler

import "time"

// Observer is told how each lease was served, for metrics. Its methods run
// on the caller's goroutine and must return quickly.
type Observer interface {
	// WorkerLeased reports a successful Acquire: warm when an idle worker
	// of the pool took the call; otherwise a new worker was started after
	// waiting queued for capacity, and took start to become ready.
	WorkerLeased(machineType string, warm bool, queued, start time.Duration)
}
