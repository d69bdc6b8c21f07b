package envbuild

import (
	"os/exec"
	"syscall"
)

// configureProcess puts uv in its own process group so cancelling a build
// also kills the build backends uv started, and asks the kernel to kill uv
// if the server dies mid-build (the half-built directory is removed at the
// next start).
func configureProcess(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
