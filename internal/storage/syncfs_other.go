//go:build !linux

package storage

import "os"

// syncsWholeFS is false: each staged file is flushed on its own.
const syncsWholeFS = false

// syncFS flushes the account directory itself, so that the renames are
// durable; the files were flushed as they were finished.
func syncFS(root *os.Root) error {
	f, err := root.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
