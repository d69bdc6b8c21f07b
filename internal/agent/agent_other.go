//go:build !linux

package agent

import "syscall"

// runnerProcAttr: without Pdeathsig, the launcher's process-group kill is
// what ends a runner whose agent died.
func runnerProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}
