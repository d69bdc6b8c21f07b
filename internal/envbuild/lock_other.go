//go:build !unix

package envbuild

// fileLock is a no-op where flock(2) does not exist: only the in-process
// locks protect builds and removals there.
type fileLock struct{}

func tryLockFile(path string, mode lockMode) (*fileLock, bool, error) {
	return &fileLock{}, true, nil
}

func (l *fileLock) unlock() {}
