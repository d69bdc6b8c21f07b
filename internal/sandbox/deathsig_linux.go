package sandbox

import "syscall"

// dieWithServer has the kernel kill a plain-process agent when the server
// that started it dies, however it dies (kill -9 included); the agent's
// runner dies with the agent the same way. Containers need no such signal:
// their agent exits when the server's end of its stream closes, and the
// container's every process ends with its init.
func dieWithServer(attr *syscall.SysProcAttr) *syscall.SysProcAttr {
	if attr == nil {
		attr = &syscall.SysProcAttr{}
	}
	attr.Pdeathsig = syscall.SIGKILL
	return attr
}
