package storage

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Volume is one account's /data, opened for people on the server host
// (atoll data ls|get|rm). Like the service, it reaches the account
// directory only through an os.Root, so links stored in /data cannot lead
// it elsewhere on the host.
type Volume struct {
	account string
	root    *os.Root
	unmount func() error // a loop volume mounted for this Volume, else nil
}

// OpenVolume opens account's directory under the server's data directory.
// It creates nothing: an account that never stored anything has an error
// wrapping fs.ErrNotExist.
func OpenVolume(dataDir, account string) (*Volume, error) {
	if err := validAccount(account); err != nil {
		return nil, err
	}
	dir := filepath.Join(dataDir, "data", account)
	unmount, err := mountIfUnmounted(dataDir, account)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		if unmount != nil {
			unmount()
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("account %q has no /data under %s: %w", account, dataDir, fs.ErrNotExist)
		}
		return nil, err
	}
	return &Volume{account: account, root: root, unmount: unmount}, nil
}

// Close releases the volume, and unmounts a loop volume OpenVolume mounted.
func (v *Volume) Close() error {
	err := v.root.Close()
	if v.unmount != nil {
		err = errors.Join(err, v.unmount())
	}
	return err
}

// FileInfo describes one entry of a volume.
type FileInfo struct {
	// Path is the entry's path as workers see it ("/data/...").
	Path       string
	Size       int64
	Mode       fs.FileMode
	ModTime    time.Time
	LinkTarget string
}

// List describes the entry at remote (a path under /data) or, for a
// directory, its entries sorted by name; with recursive, everything
// beneath it. Uploads in flight are left out.
func (v *Volume) List(remote string, recursive bool) ([]FileInfo, error) {
	rel, err := RemoteRel(remote)
	if err != nil {
		return nil, err
	}
	fi, err := v.root.Lstat(rel)
	if err != nil {
		return nil, v.pathError(rel, err)
	}
	if !fi.IsDir() {
		return []FileInfo{v.info(rel, fi)}, nil
	}
	var out []FileInfo
	err = fs.WalkDir(v.root.FS(), rel, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == rel {
			return nil
		}
		if p == stagingDir {
			return fs.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, v.info(p, fi))
		if d.IsDir() && !recursive {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (v *Volume) info(rel string, fi fs.FileInfo) FileInfo {
	info := FileInfo{Path: RemotePath(rel), Size: fi.Size(), Mode: fi.Mode(), ModTime: fi.ModTime()}
	if fi.Mode()&fs.ModeSymlink != 0 {
		info.LinkTarget, _ = v.root.Readlink(rel)
	}
	return info
}

func (v *Volume) pathError(rel string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: no such file or directory in account %q: %w", RemotePath(rel), v.account, fs.ErrNotExist)
	}
	return fmt.Errorf("%s: %w", RemotePath(rel), err)
}

// Get copies the file, link or tree at remote to the local path dst, which
// must not exist yet, keeping modes and links. It returns the number of
// files and bytes copied.
func (v *Volume) Get(remote, dst string) (files int, bytes int64, err error) {
	rel, err := RemoteRel(remote)
	if err != nil {
		return 0, 0, err
	}
	if _, err := os.Lstat(dst); err == nil {
		return 0, 0, fmt.Errorf("%s already exists", dst)
	}
	fi, err := v.root.Lstat(rel)
	if err != nil {
		return 0, 0, v.pathError(rel, err)
	}
	if !fi.IsDir() {
		n, err := v.copyOut(rel, fi, dst)
		return 1, n, err
	}
	local := func(p string) string {
		if rel != "." {
			p = strings.TrimPrefix(strings.TrimPrefix(p, rel), "/")
		}
		return filepath.Join(dst, filepath.FromSlash(p))
	}
	var dirs []string
	err = fs.WalkDir(v.root.FS(), rel, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == stagingDir {
			return fs.SkipDir
		}
		if d.IsDir() {
			dirs = append(dirs, p)
			return os.Mkdir(local(p), 0o700)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n, err := v.copyOut(p, fi, local(p))
		if err == nil && fi.Mode().IsRegular() {
			files++
			bytes += n
		}
		return err
	})
	if err != nil {
		return files, bytes, err
	}
	// Directory modes last, so that read-only directories could be filled.
	for _, p := range slices.Backward(dirs) {
		if fi, err := v.root.Lstat(p); err == nil {
			if err := os.Chmod(local(p), fi.Mode().Perm()); err != nil {
				return files, bytes, err
			}
		}
	}
	return files, bytes, nil
}

func (v *Volume) copyOut(rel string, fi fs.FileInfo, dst string) (int64, error) {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := v.root.Readlink(rel)
		if err != nil {
			return 0, err
		}
		return 0, os.Symlink(target, dst)
	case !fi.Mode().IsRegular():
		return 0, fmt.Errorf("%s is not a regular file", RemotePath(rel))
	}
	src, err := v.root.Open(rel)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm()|0o200)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, src)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(dst, fi.Mode().Perm())
	}
	return n, err
}

// Remove deletes the file or link at remote, or the directory with
// everything in it when recursive. /data itself cannot be removed.
func (v *Volume) Remove(remote string, recursive bool) error {
	rel, err := RemoteRel(remote)
	if err != nil {
		return err
	}
	if rel == "." {
		return fmt.Errorf("%w: refusing to remove /data itself; remove what is in it", ErrInvalidPath)
	}
	fi, err := v.root.Lstat(rel)
	if err != nil {
		return v.pathError(rel, err)
	}
	if fi.IsDir() {
		if !recursive {
			return fmt.Errorf("%s is a directory; remove it with -r", RemotePath(rel))
		}
		return v.root.RemoveAll(rel)
	}
	return v.root.Remove(rel)
}
