package sandbox

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// watchPidFile watches path's directory before the runtime starts, so no
// write is missed. runc writes the file beside and renames it into place
// (IN_MOVED_TO); crun and runsc write it in place (IN_CLOSE_WRITE).
func watchPidFile(path string) (*pidFileWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("watch pid file: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch pid file: %w", err)
	}
	// Non-blocking, so Go's poller serves reads and Close ends a pending
	// one.
	w := &pidFileWatch{path: path, file: os.NewFile(uintptr(fd), "inotify"), changed: make(chan struct{}, 1)}
	go func() {
		defer close(w.changed)
		buf := make([]byte, 4096) // the events' names are not needed: written looks
		for {
			if _, err := w.file.Read(buf); err != nil {
				return
			}
			select {
			case w.changed <- struct{}{}:
			default: // a token is waiting already
			}
		}
	}()
	return w, nil
}
