package storage

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestVolume(t *testing.T) {
	s := newTestStore(t, Options{})
	tr := tree{
		"m":           {isDir: true, mode: 0o755},
		"m/w.bin":     {content: "weights", mode: 0o640},
		"m/sub":       {isDir: true, mode: 0o750},
		"m/sub/c.txt": {content: "config", mode: 0o644},
		"m/latest":    {link: "w.bin"},
		"top.txt":     {content: "top", mode: 0o644},
	}
	if _, err := syncTree(t, s, "acme", "/data", tr); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenVolume(s.opts.DataDir, "nobody-yet"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenVolume of an account without data: %v; want fs.ErrNotExist", err)
	}
	v, err := OpenVolume(s.opts.DataDir, "acme")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	paths := func(infos []FileInfo) []string {
		var out []string
		for _, fi := range infos {
			out = append(out, fi.Path)
		}
		return out
	}
	list, err := v.List("/data", false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/data/m", "/data/top.txt"}, paths(list)); diff != "" {
		t.Errorf("ls /data (-want +got):\n%s", diff)
	}
	list, err = v.List("/data/m", true)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/data/m/latest", "/data/m/sub", "/data/m/sub/c.txt", "/data/m/w.bin"}, paths(list)); diff != "" {
		t.Errorf("ls -R /data/m (-want +got):\n%s", diff)
	}
	if list[0].LinkTarget != "w.bin" {
		t.Errorf("link listed as %+v", list[0])
	}
	if list, err := v.List("/data/top.txt", false); err != nil || len(list) != 1 || list[0].Size != 3 {
		t.Errorf("ls of a file = %+v, %v", list, err)
	}
	if _, err := v.List("/data/missing", false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ls of a missing path: %v", err)
	}
	if _, err := v.List("/data/../..", false); !errors.Is(err, ErrInvalidPath) {
		t.Errorf("ls outside /data: %v", err)
	}
	if n, err := usage(v.root); err != nil || n != int64(len("weights")+len("config")+len("top")) {
		t.Errorf("usage = %d, %v", n, err)
	}

	out := filepath.Join(t.TempDir(), "copy")
	files, n, err := v.Get("/data/m", out)
	if err != nil {
		t.Fatal(err)
	}
	if files != 2 || n != int64(len("weights")+len("config")) {
		t.Errorf("Get copied %d files, %d bytes", files, n)
	}
	want := tree{"w.bin": tr["m/w.bin"], "sub": tr["m/sub"], "sub/c.txt": tr["m/sub/c.txt"], "latest": tr["m/latest"]}
	if diff := cmp.Diff(want, readTree(t, out), cmpNode); diff != "" {
		t.Errorf("copied tree (-want +got):\n%s", diff)
	}
	if _, _, err := v.Get("/data/m", out); err == nil {
		t.Error("Get overwrote an existing destination")
	}
	one := filepath.Join(t.TempDir(), "top")
	if _, _, err := v.Get("/data/top.txt", one); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(one); string(data) != "top" {
		t.Errorf("copied file holds %q", data)
	}

	if err := v.Remove("/data", true); !errors.Is(err, ErrInvalidPath) {
		t.Errorf("rm /data: %v; want refused", err)
	}
	if err := v.Remove("/data/m", false); err == nil {
		t.Error("rm of a directory without -r succeeded")
	}
	if err := v.Remove("/data/m", true); err != nil {
		t.Fatal(err)
	}
	if err := v.Remove("/data/top.txt", false); err != nil {
		t.Fatal(err)
	}
	if got := readTree(t, accountDir(t, s, "acme")); len(got) != 0 {
		t.Errorf("left after rm: %v", got)
	}
}

func TestVolumeDoesNotFollowLinksOut(t *testing.T) {
	s := newTestStore(t, Options{})
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "host-secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := accountDir(t, s, "acme")
	if err := os.Symlink(outside, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	v, err := OpenVolume(s.opts.DataDir, "acme")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, _, err := v.Get("/data/escape/host-secret", filepath.Join(t.TempDir(), "x")); err == nil {
		t.Error("Get followed a link out of the account directory")
	}
	if err := v.Remove("/data/escape/host-secret", false); err == nil {
		t.Error("Remove followed a link out of the account directory")
	}
	if _, err := os.Stat(filepath.Join(outside, "host-secret")); err != nil {
		t.Errorf("host file gone: %v", err)
	}
}
