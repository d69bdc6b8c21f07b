package agent

import (
	"os"

	"golang.org/x/sys/unix"
)

// pipeAvailable returns how many bytes wait unread in the pipe f.
func pipeAvailable(f *os.File) int {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		n, err = unix.IoctlGetInt(int(fd), unix.TIOCINQ)
	})
	if err != nil {
		return 0
	}
	return n
}
