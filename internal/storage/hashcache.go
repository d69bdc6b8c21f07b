package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// stamp identifies one version of a file's content: if any part differs,
// the content may have changed.
type stamp struct {
	Size  int64  `json:"s"`
	Mtime int64  `json:"m"`
	Ctime int64  `json:"c,omitempty"`
	Ino   uint64 `json:"i,omitempty"`
}

type cachedHash struct {
	stamp
	SHA256 string `json:"h"`
}

// hashCache remembers the SHA-256 of the files of one account directory by
// their stamp, so that planning a sync does not read an unchanged 1 GB file
// again. It lives outside the account directory, where workers cannot
// rewrite it. It is only a cache: lost or unreadable, it is rebuilt by
// hashing.
type hashCache struct {
	file string

	mu      sync.Mutex
	loaded  bool
	dirty   bool
	entries map[string]cachedHash
}

func newHashCache(file string) *hashCache {
	return &hashCache{file: file}
}

func (c *hashCache) loadLocked() {
	if c.loaded {
		return
	}
	c.loaded = true
	c.entries = map[string]cachedHash{}
	data, err := os.ReadFile(c.file)
	if err == nil {
		if json.Unmarshal(data, &c.entries) != nil {
			c.entries = map[string]cachedHash{}
		}
	}
}

// get returns the cached hash of rel if fi still has the stamp it was
// cached with.
func (c *hashCache) get(rel string, fi fs.FileInfo) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loadLocked()
	e, ok := c.entries[rel]
	if !ok || e.stamp != fileStamp(fi) {
		return nil, false
	}
	sum, err := hex.DecodeString(e.SHA256)
	return sum, err == nil && len(sum) == sha256.Size
}

func (c *hashCache) put(rel string, fi fs.FileInfo, sum []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loadLocked()
	c.entries[rel] = cachedHash{stamp: fileStamp(fi), SHA256: hex.EncodeToString(sum)}
	c.dirty = true
}

// save writes the cache if it changed, dropping entries whose file is gone.
func (c *hashCache) save(root *os.Root) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dirty {
		return nil
	}
	for rel := range c.entries {
		if _, err := root.Lstat(rel); errors.Is(err, fs.ErrNotExist) {
			delete(c.entries, rel)
		}
	}
	data, err := json.Marshal(c.entries)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.file), 0o700); err != nil {
		return err
	}
	tmp := c.file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, c.file); err != nil {
		return err
	}
	c.dirty = false
	return nil
}

// hashFile returns the SHA-256 of the regular file rel inside root, from the
// cache when its stamp is unchanged.
func (c *hashCache) hashFile(ctx context.Context, root *os.Root, rel string) ([]byte, error) {
	f, err := root.Open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", rel)
	}
	if sum, ok := c.get(rel, fi); ok {
		return sum, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return nil, err
	}
	sum := h.Sum(nil)
	c.put(rel, fi, sum)
	return sum, nil
}

// ctxReader stops a long read when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
