package agent

import "syscall"

// runnerProcAttr makes the kernel kill the runner if the agent dies first.
func runnerProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
