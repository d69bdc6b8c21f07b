//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package storage

import (
	"io/fs"
	"syscall"
)

// fileStamp identifies a version of a file's content without reading it:
// a rewrite in place changes the ctime even if the mtime is set back.
func fileStamp(fi fs.FileInfo) stamp {
	s := stamp{Size: fi.Size(), Mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.Ctime = ctimeNanos(st)
		s.Ino = uint64(st.Ino)
	}
	return s
}
