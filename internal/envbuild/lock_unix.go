//go:build unix

package envbuild

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// fileLock is an flock(2) lock on a file under Root/locks. Locks are what
// keep two server processes (or the server and `atoll envs prune`) sharing a
// Root from building the same key twice or removing an environment in use.
type fileLock struct{ f *os.File }

// tryLockFile takes the lock without blocking; ok is false when another
// holder conflicts.
func tryLockFile(path string, mode lockMode) (l *fileLock, ok bool, err error) {
	how := unix.LOCK_SH
	if mode == lockExclusive {
		how = unix.LOCK_EX
	}
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, false, err
		}
		err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		switch {
		case errors.Is(err, unix.EWOULDBLOCK):
			f.Close()
			return nil, false, nil
		case errors.Is(err, unix.EINTR):
			f.Close()
			continue
		case err != nil:
			f.Close()
			return nil, false, err
		}
		// A remover deletes the lock file while holding it; a lock taken on
		// the old, unlinked inode protects nothing, so start over.
		if sameFile(f, path) {
			return &fileLock{f: f}, true, nil
		}
		f.Close()
	}
}

func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	if err != nil {
		return false
	}
	return os.SameFile(a, b)
}

func (l *fileLock) unlock() {
	if l != nil && l.f != nil {
		l.f.Close() // closing the last descriptor releases the flock
		l.f = nil
	}
}
