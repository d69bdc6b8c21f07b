package sandbox

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// runcSeals are the seals by which runc recognises a copy of itself it
// need not make again (runc 1.1's cloned_binary.c, 1.2's dmz package).
const runcSeals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

// sealedCopy copies the binary at path into a memfd sealed against every
// change and returns the file and the path that executes it. runc copies
// itself into such a memfd at every container start, so that a container
// can never overwrite the host's runc through /proc/self/exe (CVE-2019-5736):
// about 9 MB written and one more exec per start. Started from a sealed
// copy, it recognises one and skips that; the copy is made once, here,
// and as unchangeable. The copy is the binary as it was at server start.
func sealedCopy(path string) (*os.File, string, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("runc", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, "", fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "runc")
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("copy %s: %w", path, err)
	}
	if err := os.Chmod("/proc/self/fd/"+strconv.Itoa(fd), 0o500); err != nil {
		f.Close()
		return nil, "", err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, runcSeals); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("seal: %w", err)
	}
	// Through this process's /proc entry, not /proc/self: the runtime is
	// started without the descriptor (close-on-exec).
	return f, "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(fd), nil
}
