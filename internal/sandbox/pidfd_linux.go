package sandbox

import (
	"bytes"
	"errors"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// openChild returns a pidfd for process pid if it is a child of parent,
// else nil. A pidfd names one process for good: signalling through it
// can never reach another that was given the same pid later.
func openChild(pid, parent int) *os.File {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil // ended already, or a kernel before 5.3
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	if ppid, ok := parentOf(pid); !ok || ppid != parent {
		// The pid was given to another process after ours ended, or the
		// runtime's pid file names a process it did not start itself.
		f.Close()
		return nil
	}
	return f
}

// parentOf reads a process's parent pid from /proc/<pid>/stat.
func parentOf(pid int) (int, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(data[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	return ppid, err == nil
}

// killPidfd sends SIGKILL through a pidfd; a process that has ended
// already is no error. Using the File keeps its descriptor open until the
// signal is sent, should another goroutine close it meanwhile.
func killPidfd(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var sigErr error
	if err := rc.Control(func(fd uintptr) {
		sigErr = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0)
	}); err != nil {
		return err
	}
	if errors.Is(sigErr, unix.ESRCH) {
		return nil
	}
	return sigErr
}
