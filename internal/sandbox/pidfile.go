package sandbox

import "os"

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
