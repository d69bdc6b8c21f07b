package server

import "github.com/atoll-dev/atoll/internal/state"

// RunObserver follows runs as the History records them: the dashboard shows
// runs and their output live with it, and metrics count their outcomes. Its
// methods run on the call's goroutine and must return quickly.
type RunObserver interface {
	RunQueued(run state.Run)
	RunStarted(run state.Run)
	RunOutput(run state.Run, line state.LogLine)
	RunFinished(run state.Run)
}

// HistoryOption configures NewHistory.
type HistoryOption func(*History)

// WithRunObserver has o follow every run the History records.
func WithRunObserver(o RunObserver) HistoryOption {
	return func(h *History) { h.observer = o }
}
