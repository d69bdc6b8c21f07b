package sandbox

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// pidFileWatch tells when the runtime has written its pid file, which it
// does once the container's process runs. It watches the bundle directory
// (inotify on Linux), so a start wakes on the write instead of polling.
type pidFileWatch struct {
	path    string
	file    *os.File      // the watch
	changed chan struct{} // a token after each write into the directory; closed with the watch
}

// written reports whether the pid file is there, whole.
func (w *pidFileWatch) written() bool {
	fi, err := os.Stat(w.path)
	return err == nil && fi.Size() > 0
}

func (w *pidFileWatch) Close() error { return w.file.Close() }

// readPidFile reads the container's pid that the runtime wrote.
func readPidFile(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read the container's pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("the runtime's pid file holds %q", data)
	}
	return pid, nil
}
