//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package storage

import "io/fs"

func fileStamp(fi fs.FileInfo) stamp {
	return stamp{Size: fi.Size(), Mtime: fi.ModTime().UnixNano()}
}
