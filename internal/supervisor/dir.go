package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Files under <root>/run, the supervisor's private directory.
const (
	runDir     = "run"
	socketName = "supervisor.sock"
	lockName   = "supervisor.lock"
	pidName    = "supervisor.pid"
)

// SocketPath is where the supervisor of root listens.
func SocketPath(root string) string { return filepath.Join(root, runDir, socketName) }

// privateDir creates <root>/run with mode 0700 and checks that it is this
// user's and nobody else's: permission to connect to the socket is
// permission to run code as this user.
func privateDir(root string) (string, error) {
	dir := filepath.Join(root, runDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("supervisor directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("supervisor directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return "", fmt.Errorf("%w: %s is not a directory", ErrUnsafeDir, dir)
	case !ok || int(st.Uid) != os.Getuid():
		return "", fmt.Errorf("%w: %s belongs to another user", ErrUnsafeDir, dir)
	case fi.Mode().Perm()&0o077 != 0:
		return "", fmt.Errorf("%w: %s has mode %v; it must be 0700", ErrUnsafeDir, dir, fi.Mode().Perm())
	}
	return dir, nil
}

// lock takes the directory's lock for this process's life: one supervisor
// per cache directory. The kernel drops it when the process ends, however
// it ends.
func lock(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("supervisor lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w for %s", ErrRunning, filepath.Dir(dir))
		}
		return nil, fmt.Errorf("supervisor lock: %w", err)
	}
	return f, nil
}

// Stop ends the supervisor of root, if one runs, and waits until it has
// released its lock. It reports whether one ran.
func Stop(root string) (bool, error) {
	dir := filepath.Join(root, runDir)
	data, err := os.ReadFile(filepath.Join(dir, pidName))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return false, fmt.Errorf("malformed pid file in %s: %w", dir, err)
	}
	// Only a live holder of the lock is the supervisor: a pid file left by
	// one that died may name an unrelated process by now.
	f, err := lock(dir)
	if err == nil {
		f.Close()
		return false, nil
	}
	if !errors.Is(err, ErrRunning) {
		return false, err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return false, fmt.Errorf("stop supervisor %d: %w", pid, err)
	}
	f, err = os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	// Blocks until the supervisor exits and the kernel drops its lock.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return false, fmt.Errorf("wait for supervisor %d: %w", pid, err)
	}
	return true, nil
}
