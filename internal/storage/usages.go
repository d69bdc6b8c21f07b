package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Usages returns the bytes of regular files each account with a /data
// directory stores, by account. Unlike Usage it creates no directory, so
// that a metrics scrape leaves the data directory as it found it.
func (s *Store) Usages() (map[string]int64, error) {
	dirs, err := os.ReadDir(s.volumesDir())
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	out := make(map[string]int64, len(dirs))
	for _, d := range dirs {
		if !d.IsDir() || validAccount(d.Name()) != nil {
			continue
		}
		root, err := os.OpenRoot(filepath.Join(s.volumesDir(), d.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		n, err := usage(root)
		root.Close()
		if err != nil {
			return nil, fmt.Errorf("storage: usage of %s: %w", d.Name(), err)
		}
		out[d.Name()] = n
	}
	return out, nil
}
