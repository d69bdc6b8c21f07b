package agent

import "golang.org/x/sys/unix"

// pipeAvailable returns how many bytes wait unread in the pipe fd.
func pipeAvailable(fd int) int {
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
	if err != nil {
		return 0
	}
	return n
}
