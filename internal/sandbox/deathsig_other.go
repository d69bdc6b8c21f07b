//go:build !linux

package sandbox

import "syscall"

// dieWithServer leaves attr as it is where there is no parent-death
// signal: the agent then exits when the server's end of its stream closes.
func dieWithServer(attr *syscall.SysProcAttr) *syscall.SysProcAttr { return attr }
