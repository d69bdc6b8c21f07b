package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// venvOnServer makes a venv as the server's builder leaves it: links to the
// server's interpreter, which mean nothing on a node.
func venvOnServer(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "venv")
	writeFile(t, filepath.Join(dir, "lib/python3.11/site-packages/pkg/__init__.py"), "VALUE = 42\n")
	writeFile(t, filepath.Join(dir, "pyvenv.cfg"), "home = /root/.pyenv/versions/3.11.7/bin\n")
	writeFile(t, filepath.Join(dir, "bin/activate"), "# activate\n")
	if err := os.Symlink("/root/.pyenv/versions/3.11.7/bin/python3.11", filepath.Join(dir, "bin/python")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("lib", filepath.Join(dir, "lib64")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "lib/python3.11/site-packages/escape")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestArchiveRoundTrip(t *testing.T) {
	archives, err := NewArchives(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	digest, err := archives.Pack("env:k", venvOnServer(t), &venvRewrite{python: "3.11"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := archives.Pack("env:k", "/nonexistent", nil)
	if err != nil || again != digest {
		t.Fatalf("second Pack of one key: %q, %v; want %q from the first", again, err, digest)
	}
	srv := NewArchiveServer(archives)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	cred, revoke := srv.Grant([]string{digest})
	cache := t.TempDir()
	var logs []string
	opts := FetchOptions{URL: hs.URL, Credential: cred, CacheDir: cache, Digests: []string{digest},
		Logf: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }}
	if err := Fetch(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(cache, digestDir(digest))
	if b, err := os.ReadFile(filepath.Join(tree, "lib/python3.11/site-packages/pkg/__init__.py")); err != nil || string(b) != "VALUE = 42\n" {
		t.Errorf("package file: %q, %v", b, err)
	}
	if link, err := os.Readlink(filepath.Join(tree, "bin/python")); err != nil || link != "/usr/bin/python3.11" {
		t.Errorf("bin/python -> %q, %v: want the image's interpreter", link, err)
	}
	if b, _ := os.ReadFile(filepath.Join(tree, "pyvenv.cfg")); !strings.Contains(string(b), "home = /usr/bin\n") {
		t.Errorf("pyvenv.cfg %q: want the image's prefix", b)
	}
	if _, err := os.Lstat(filepath.Join(tree, "bin/activate")); err == nil {
		t.Error("the server's bin scripts were shipped")
	}
	if _, err := os.Lstat(filepath.Join(tree, "lib/python3.11/site-packages/escape")); err == nil {
		t.Error("a link leaving the tree was shipped")
	}
	if link, err := os.Readlink(filepath.Join(tree, "lib64")); err != nil || link != "lib" {
		t.Errorf("lib64 -> %q, %v: want the relative link kept", link, err)
	}

	// A second pod on the node finds it unpacked and asks the server nothing,
	// even once its credential is revoked.
	revoke()
	logs = nil
	if err := Fetch(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if len(logs) != 1 || !strings.Contains(logs[0], "cached on this node") {
		t.Errorf("second fetch logged %q: want it served from the node's cache", logs)
	}

	// A revoked or foreign credential gets nothing.
	opts.CacheDir = t.TempDir()
	if err := Fetch(context.Background(), opts); !errors.Is(err, ErrArchive) || !strings.Contains(err.Error(), "403") {
		t.Errorf("fetch with a revoked credential: %v, want a 403", err)
	}
	other, _ := srv.Grant([]string{"sha256:" + strings.Repeat("0", 64)})
	opts.Credential = other
	if err := Fetch(context.Background(), opts); !errors.Is(err, ErrArchive) || !strings.Contains(err.Error(), "403") {
		t.Errorf("fetch of an archive the credential does not grant: %v, want a 403", err)
	}
}

func TestFetchRejectsBytesThatDoNotMatchTheDigest(t *testing.T) {
	archives, err := NewArchives(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), "data")
	digest, err := archives.Pack("x", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The stored file is replaced behind the server's back.
	path := filepath.Join(archives.dir, digestDir(digest)+".tar.gz")
	if err := os.WriteFile(path, []byte("not the archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := NewArchiveServer(archives)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	cred, _ := srv.Grant([]string{digest})
	cache := t.TempDir()
	err = Fetch(context.Background(), FetchOptions{URL: hs.URL, Credential: cred, CacheDir: cache, Digests: []string{digest}})
	if !errors.Is(err, ErrArchive) || !strings.Contains(err.Error(), "hash to") {
		t.Fatalf("err %v: want a hash mismatch", err)
	}
	if _, err := os.Stat(filepath.Join(cache, digestDir(digest))); err == nil {
		t.Error("a mismatching archive was unpacked into the cache")
	}
}
