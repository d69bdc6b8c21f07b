//go:build !linux

package agent

import (
	"os/exec"
	"syscall"
)

// runnerProcAttr: without Pdeathsig, the launcher's process-group kill is
// what ends a runner whose agent died.
func runnerProcAttr(runner *User) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}

// protectAgent: nothing to set; the plain process launcher, the only one
// here, isolates nothing.
func protectAgent() error { return nil }

func dropTo(User) error { return ErrUserSplitUnsupported }

func startWithoutBoundingSet(*exec.Cmd) error { return ErrUserSplitUnsupported }
