//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package storage

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func fileUID(fi fs.FileInfo) int { return int(fi.Sys().(*syscall.Stat_t).Uid) }

func TestOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving files to another uid needs root")
	}
	s := newTestStore(t, Options{Owner: &Owner{UID: 65534, GID: 65534}})
	if _, err := syncTree(t, s, "acme", "/data/a/b", tree{"d": {isDir: true}, "d/f": {content: "f"}, "l": {link: "d"}}); err != nil {
		t.Fatal(err)
	}
	dir := accountDir(t, s, "acme")
	for _, p := range []string{"", "a", "a/b", "a/b/d", "a/b/d/f", "a/b/l"} {
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if uid := fileUID(fi); uid != 65534 {
			t.Errorf("%q is owned by uid %d; want 65534", p, uid)
		}
	}
}
