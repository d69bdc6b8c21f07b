package serverapp

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockFile is the file under the data directory whose exclusive lock the
// running server holds for its whole life.
const LockFile = "server.lock"

// lockDataDir takes the data directory's lock before any other step
// touches the directory: a second server on the same directory must fail
// at once, before its start-up clean-up could remove the first one's live
// workers. The lock is the kernel's (flock): it goes with the process,
// however it ends, so a server killed with -9 never leaves it behind. The
// file holds the holder's pid, for the message the next server prints.
func (a *app) lockDataDir(context.Context) error {
	dataDir, err := filepath.Abs(a.cfg.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dataDir, LockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("data dir lock: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("data dir lock %s: %w", path, err)
	}
	if !held {
		defer f.Close()
		holder := "another process"
		if data, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 0 {
				holder = fmt.Sprintf("pid %d", pid)
			}
		}
		return fmt.Errorf("%w (%s) in %s: stop it first (atoll server stop --data-dir %s), or give this one another --data-dir",
			ErrDataDirInUse, holder, dataDir, dataDir)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	// Closed last of all: every other step's undo runs with the lock held.
	a.undo = append(a.undo, func() { f.Close() })
	return nil
}
