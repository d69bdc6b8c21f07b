//go:build !unix

package sandbox

import (
	"os"
	"syscall"

	"github.com/atoll-dev/atoll/internal/scheduler"
)

func ownProcessGroup() *syscall.SysProcAttr { return nil }

// killGroup can only end the agent itself here; process groups are a Unix
// notion.
func killGroup(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil
	}
	if err := p.Kill(); err != nil && err != os.ErrProcessDone {
		return err
	}
	return nil
}

func exitOf(ps *os.ProcessState) scheduler.Exit {
	return scheduler.Exit{Code: ps.ExitCode()}
}
