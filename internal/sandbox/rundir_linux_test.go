package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	runc "github.com/containerd/go-runc"
)

func TestTheRunDirIsInMemoryAndTheServerUsersAlone(t *testing.T) {
	state := t.TempDir()
	dir, err := memoryRunDir(state)
	if err != nil {
		t.Fatalf("memoryRunDir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if !strings.HasPrefix(dir, shmDir+"/atoll-") {
		t.Errorf("run dir %s, want one under %s", dir, shmDir)
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("run dir %v, %v: want a directory of mode 0700", fi, err)
	}
	// A restarted server finds what its predecessor left.
	if again, err := memoryRunDir(state); err != nil || again != dir {
		t.Errorf("second memoryRunDir = %q, %v; want %q", again, err, dir)
	}
	if other, err := memoryRunDir(t.TempDir()); err != nil || other == dir {
		t.Errorf("another state directory's run dir = %q, %v", other, err)
	} else {
		os.RemoveAll(other)
	}
}

func TestARunDirSomeoneElseMadeIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving the squatted directory another owner takes root")
	}
	squat := func(t *testing.T, make func(path string) error) error {
		t.Helper()
		state := t.TempDir()
		dir, err := memoryRunDir(state) // the name it will have
		if err != nil {
			t.Fatalf("memoryRunDir: %v", err)
		}
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		if err := make(dir); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		_, err = memoryRunDir(state)
		return err
	}
	for _, tt := range []struct {
		name string
		make func(string) error
	}{
		{"another user's directory", func(p string) error {
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			return os.Chown(p, NobodyID, NobodyID)
		}},
		{"a directory others may write", func(p string) error {
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			return os.Chmod(p, 0o777)
		}},
		{"a symbolic link to a directory of ours", func(p string) error {
			return os.Symlink(t.TempDir(), p)
		}},
		{"a file", func(p string) error { return os.WriteFile(p, nil, 0o600) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := squat(t, tt.make); err == nil {
				t.Error("memoryRunDir took it")
			}
		})
	}
}

func TestCloseRemovesTheRunDirOnlyOnceNothingIsLeftInIt(t *testing.T) {
	state := t.TempDir()
	dir, err := memoryRunDir(state)
	if err != nil {
		t.Fatalf("memoryRunDir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l := &OCILauncher{bundles: filepath.Join(dir, "bundles"), runDir: dir}
	l.rt = &runc.Runc{Root: filepath.Join(dir, "runtime")}
	for _, d := range []string{l.bundles, l.rt.Root} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	left := filepath.Join(l.bundles, "w-left")
	if err := os.Mkdir(left, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err == nil {
		t.Error("Close removed a run dir that still holds a bundle")
	}
	if _, err := os.Stat(left); err != nil {
		t.Errorf("the bundle left for the next server is gone: %v", err)
	}
	if err := os.Remove(left); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run dir still there after Close: %v", err)
	}
}
