package envbuild

import (
	"context"
	"time"
)

type lockMode int

const (
	lockShared lockMode = iota
	lockExclusive
)

// lockFile waits for the lock until ctx is done. flock has no timeout, so it
// polls with a non-blocking attempt and a capped backoff.
func lockFile(ctx context.Context, path string, mode lockMode) (*fileLock, error) {
	delay := 2 * time.Millisecond
	for {
		l, ok, err := tryLockFile(path, mode)
		if err != nil || ok {
			return l, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, context.Cause(ctx)
		case <-t.C:
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}
