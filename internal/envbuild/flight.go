package envbuild

import (
	"context"
	"sync"
)

// flight is one build in progress, shared by every caller that asked for the
// same thing while it ran. It runs on its own context, cancelled only when
// all of its callers have given up (or the Builder closes), so one caller
// leaving does not fail the others.
type flight struct {
	done   chan struct{}
	err    error // set before done is closed
	cancel context.CancelFunc

	waiters int // guarded by Builder.mu

	mu    sync.Mutex
	lines []string // recent output, replayed to callers who join late
	subs  map[int]func(string)
	next  int
}

// maxReplayLines bounds the output kept for late joiners.
const maxReplayLines = 1000

func (f *flight) subscribe(logf func(string)) int {
	if logf == nil {
		return -1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.lines {
		logf(l)
	}
	id := f.next
	f.next++
	f.subs[id] = logf
	return id
}

func (f *flight) unsubscribe(id int) {
	f.mu.Lock()
	delete(f.subs, id)
	f.mu.Unlock()
}

// broadcast hands a line to every caller still waiting. Callbacks run under
// f.mu, so each caller sees lines in order and none after it has left.
func (f *flight) broadcast(line string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lines = append(f.lines, line)
	if len(f.lines) > 2*maxReplayLines {
		f.lines = append(f.lines[:0], f.lines[len(f.lines)-maxReplayLines:]...)
	}
	for _, logf := range f.subs {
		logf(line)
	}
}

// join runs build under id, or waits for the run already in progress, and
// returns its error. logf receives the build's output while the caller waits.
func (b *Builder) join(ctx context.Context, id string, logf func(string), build func(ctx context.Context, logf func(string)) error) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	f := b.flights[id]
	if f == nil {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel, subs: map[int]func(string){}}
		b.flights[id] = f
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			err := build(fctx, f.broadcast)
			b.mu.Lock()
			if b.flights[id] == f {
				delete(b.flights, id)
			}
			b.mu.Unlock()
			f.err = err
			close(f.done)
			cancel()
		}()
	}
	f.waiters++
	b.mu.Unlock()

	sub := f.subscribe(logf)
	defer f.unsubscribe(sub)
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		b.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
			// A caller arriving now must not join a build being torn down.
			if b.flights[id] == f {
				delete(b.flights, id)
			}
		}
		b.mu.Unlock()
		return context.Cause(ctx)
	}
}
