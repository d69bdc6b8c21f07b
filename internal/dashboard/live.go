package dashboard

import (
	"sync"
	"time"

	"github.com/atoll-dev/atoll/internal/state"
)

// liveLogLimit bounds the output held per run in memory, as the run history
// bounds what it stores.
const liveLogLimit = 1 << 20

// liveKeep is how long a finished run stays in memory: long enough for the
// run history, which writes a little behind, to have it. liveKeepRuns
// bounds how many finished runs stay, so that a busy server's memory does
// not grow with its call rate.
const (
	liveKeep     = time.Minute
	liveKeepRuns = 256
)

// Live follows runs in flight and their output as they happen, so that the
// dashboard can stream them; finished runs are read from the run history.
// It implements server.RunObserver.
type Live struct {
	now func() time.Time

	mu   sync.Mutex
	runs map[string]*liveRun
	// finished lists finished runs' ids, oldest first, for forgetting.
	finished []string
}

// liveRun is one run with its output so far. changed is closed and
// replaced on every change, waking whoever streams it.
type liveRun struct {
	run       state.Run
	lines     []state.LogLine
	size      int
	truncated bool
	changed   chan struct{}
}

// NewLive returns an empty Live.
func NewLive() *Live {
	return &Live{now: time.Now, runs: map[string]*liveRun{}}
}

// RunQueued implements server.RunObserver.
func (l *Live) RunQueued(run state.Run) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked()
	l.runs[run.ID] = &liveRun{run: run, changed: make(chan struct{})}
}

// RunStarted implements server.RunObserver.
func (l *Live) RunStarted(run state.Run) {
	l.update(run.ID, func(r *liveRun) { r.run = run })
}

// RunOutput implements server.RunObserver.
func (l *Live) RunOutput(run state.Run, line state.LogLine) {
	l.update(run.ID, func(r *liveRun) {
		if r.size+len(line.Data) > liveLogLimit {
			r.truncated = true
			return
		}
		r.size += len(line.Data)
		line.Seq = int64(len(r.lines) + 1)
		r.lines = append(r.lines, line)
	})
}

// RunFinished implements server.RunObserver.
func (l *Live) RunFinished(run state.Run) {
	l.update(run.ID, func(r *liveRun) {
		r.run = run
		l.finished = append(l.finished, run.ID)
	})
}

func (l *Live) update(id string, f func(*liveRun)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.runs[id]
	if r == nil {
		return
	}
	f(r)
	close(r.changed)
	r.changed = make(chan struct{})
}

// pruneLocked forgets the oldest finished runs beyond liveKeepRuns or
// liveKeep: amortized O(1) per run.
func (l *Live) pruneLocked() {
	cutoff := l.now().Add(-liveKeep)
	n := 0
	for ; n < len(l.finished); n++ {
		r := l.runs[l.finished[n]]
		if len(l.finished)-n <= liveKeepRuns && r != nil && !r.run.FinishedAt.Before(cutoff) {
			break
		}
		delete(l.runs, l.finished[n])
	}
	l.finished = append(l.finished[:0], l.finished[n:]...)
}

// Runs returns the runs held, as they stand.
func (l *Live) Runs() []state.Run {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]state.Run, 0, len(l.runs))
	for _, r := range l.runs {
		out = append(out, r.run)
	}
	return out
}

// snapshot is a run's state and the output after a cursor, with the channel
// closed at its next change.
type snapshot struct {
	run       state.Run
	lines     []state.LogLine
	truncated bool
	changed   <-chan struct{}
}

// since returns the run id's state with its lines after the first n, or
// false when the run is not held.
func (l *Live) since(id string, n int) (snapshot, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.runs[id]
	if r == nil {
		return snapshot{}, false
	}
	s := snapshot{run: r.run, truncated: r.truncated, changed: r.changed}
	if n < len(r.lines) {
		s.lines = append([]state.LogLine(nil), r.lines[n:]...)
	}
	return s, true
}
