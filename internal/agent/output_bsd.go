//go:build darwin || freebsd || netbsd || openbsd

package agent

import "golang.org/x/sys/unix"

// fionread is _IOR('f', 127, int), the same on every BSD.
const fionread = 0x4004667f

// pipeAvailable returns how many bytes wait unread in the pipe fd.
func pipeAvailable(fd int) int {
	n, err := unix.IoctlGetInt(fd, fionread)
	if err != nil {
		return 0
	}
	return n
}
