//go:build unix

package sandbox

import (
	"errors"
	"os"
	"syscall"

	"github.com/atoll-dev/atoll/internal/scheduler"
)

// ownProcessGroup puts a child in a new process group, so that a terminal's
// Ctrl-C reaches the server only (which then tears workers down) and Kill
// can end the child's descendants with it.
func ownProcessGroup() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func killGroup(pgid int) error {
	err := syscall.Kill(-pgid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// exitOf maps a wait status: a signal gives Code -1 and the signal number.
func exitOf(ps *os.ProcessState) scheduler.Exit {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return scheduler.Exit{Code: -1, Signal: int(ws.Signal())}
	}
	return scheduler.Exit{Code: ps.ExitCode()}
}
