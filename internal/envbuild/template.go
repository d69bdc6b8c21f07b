package envbuild

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Venv templates. An empty relocatable venv is the same for every build of
// one interpreter and uv version: pyvenv.cfg, the activate scripts, the
// python links, nothing naming the venv's own path. So the first sandboxed
// build for them keeps a copy of what `uv venv` made, in
// Root/templates/<key>, and later builds start from a copy of it instead of
// a uv run (one process fewer in every build). Templates are this
// process's user's files, hidden from build sessions, and copied, never
// linked, into builds.

// templateKey names the template for interpreter py and this uv.
func (b *Builder) templateKey(py interpreter) string {
	h := sha256.New()
	fmt.Fprintf(h, "atoll-venv-template/1\n%s\n%s\n%s\nuv %s\n", py.Executable, py.Version, py.BasePrefix, b.uvVersion)
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// venvFromTemplate fills the new directory tmp with a copy of py's venv
// template; false if there is none yet (or it cannot be copied, and tmp is
// then as empty as it was).
func (b *Builder) venvFromTemplate(py interpreter, tmp string) bool {
	src := filepath.Join(b.templatesDir, b.templateKey(py))
	if _, err := os.Lstat(src); err != nil {
		return false
	}
	if err := copyTree(src, tmp); err != nil {
		b.log.Warn("copying the venv template failed; making the venv with uv", "template", src, "err", err)
		entries, _ := os.ReadDir(tmp)
		for _, e := range entries {
			os.RemoveAll(filepath.Join(tmp, e.Name()))
		}
		return false
	}
	return true
}

// saveTemplate keeps a copy of the empty venv uv just made in tmp as py's
// template. Failing only costs later builds the uv run.
func (b *Builder) saveTemplate(py interpreter, tmp string) {
	final := filepath.Join(b.templatesDir, b.templateKey(py))
	if _, err := os.Lstat(final); err == nil {
		return
	}
	part := final + "." + tmpName("t")
	if err := copyTree(tmp, part); err != nil {
		b.log.Warn("keeping a venv template failed", "err", err)
		os.RemoveAll(part)
		return
	}
	if err := os.Rename(part, final); err != nil {
		os.RemoveAll(part) // another build kept it first
	}
}

// cleanTemplates removes copies that an interrupted saveTemplate left.
func (b *Builder) cleanTemplates() {
	entries, _ := os.ReadDir(b.templatesDir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".") {
			os.RemoveAll(filepath.Join(b.templatesDir, e.Name()))
		}
	}
}

// copyTree copies the directories, regular files and symlinks under src
// into dst (created if missing), with their permission bits; anything else
// is an error. Symlinks are copied as links, never followed.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		perm := info.Mode().Perm()
		switch {
		case d.IsDir():
			if err := os.Mkdir(to, perm); err != nil && !(rel == "." && os.IsExist(err)) {
				return err
			}
			return os.Chmod(to, perm)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case d.Type().IsRegular():
			return copyFile(p, to, perm)
		default:
			return fmt.Errorf("%s: not a file, directory or symlink", p)
		}
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(dst, perm) // what the umask took off
	}
	return err
}
