//go:build darwin || freebsd || netbsd || openbsd

package agent

import (
	"os"

	"golang.org/x/sys/unix"
)

// fionread is _IOR('f', 127, int), the same on every BSD.
const fionread = 0x4004667f

// pipeAvailable returns how many bytes wait unread in the pipe f.
func pipeAvailable(f *os.File) int {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		n, err = unix.IoctlGetInt(int(fd), fionread)
	})
	if err != nil {
		return 0
	}
	return n
}
