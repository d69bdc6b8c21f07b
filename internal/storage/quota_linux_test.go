package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// newLoopVolumes skips where loop volumes cannot be made (not root, no
// loop devices); CI, as root with ATOLL_REQUIRE_SANDBOX=1, fails instead.
func newLoopVolumes(t *testing.T, dataDir string, quota int64) *LoopVolumes {
	t.Helper()
	v, err := NewLoopVolumes(dataDir, quota, nil, nil)
	if errors.Is(err, ErrVolumesUnavailable) && os.Getenv("ATOLL_REQUIRE_SANDBOX") != "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// fill writes MiB chunks to path until mib are written or a write fails.
func fill(path string, mib int) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	var n int64
	for range mib {
		w, err := f.Write(chunk)
		n += int64(w)
		if err != nil {
			return n, err
		}
	}
	return n, f.Sync()
}

func TestLoopVolumeQuotaBindsEveryWrite(t *testing.T) {
	dataDir := t.TempDir()
	const quota = 2 << 20
	v := newLoopVolumes(t, dataDir, quota)
	if err := v.Ensure("a"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(dataDir, "data", "a")
	if mounted, err := isMountPoint(dir); err != nil || !mounted {
		t.Fatalf("%s mounted = %v, %v", dir, mounted, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a new volume holds %v, want nothing", entries)
	}
	n, err := fill(filepath.Join(dir, "big"), 20)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing 20 MiB into a %d byte volume: %d bytes, %v; want ENOSPC", quota, n, err)
	}
	if n < quota || n > imageBytes(quota) {
		t.Errorf("wrote %d bytes before ENOSPC, want between the quota %d and the image size %d", n, quota, imageBytes(quota))
	}
	// Another account's volume is its own.
	if err := v.Ensure("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := fill(filepath.Join(dataDir, "data", "b", "small"), 1); err != nil {
		t.Errorf("account b, beside a full volume: %v", err)
	}

	// Unmounted and mounted again, by a later server with a larger quota:
	// the data is there, and the volume has grown.
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if mounted, _ := isMountPoint(dir); mounted {
		t.Fatal("still mounted after Close")
	}
	v2 := newLoopVolumes(t, dataDir, 8<<20)
	if err := v2.Ensure("a"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "big")); err != nil || fi.Size() != n {
		t.Fatalf("after remount: %v, %v; want the %d bytes written before", fi, err, n)
	}
	if _, err := fill(filepath.Join(dir, "more"), 5); err != nil {
		t.Errorf("5 MiB more after growing the quota to 8 MiB: %v", err)
	}
}

func TestWriteErrorOfAFullVolumeIsQuotaExceeded(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT} {
		err := writeError("x", fmt.Errorf("write: %w", errno))
		if !errors.Is(err, ErrQuotaExceeded) {
			t.Errorf("%v: %v; want ErrQuotaExceeded", errno, err)
		}
	}
	if err := writeError("x", syscall.EIO); errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("EIO: %v is not a quota", err)
	}
}

// TestOpenVolumeMountsAnUnmountedLoopVolume: `atoll data` on the server
// host sees what a loop volume holds while no server runs.
func TestOpenVolumeMountsAnUnmountedLoopVolume(t *testing.T) {
	dataDir := t.TempDir()
	v := newLoopVolumes(t, dataDir, 2<<20)
	if err := v.Ensure("a"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "data", "a", "kept"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	vol, err := OpenVolume(dataDir, "a")
	if err != nil {
		t.Fatal(err)
	}
	files, err := vol.List("/data", false)
	if err != nil || len(files) != 1 || files[0].Path != "/data/kept" {
		t.Errorf("List = %v, %v; want /data/kept", files, err)
	}
	if err := vol.Close(); err != nil {
		t.Fatal(err)
	}
	if mounted, _ := isMountPoint(filepath.Join(dataDir, "data", "a")); mounted {
		t.Error("still mounted after the Volume was closed")
	}
}

// TestLoopVolumeTakesOverADirectory: an account's /data kept as a plain
// directory (an earlier server's) moves into its new volume, whole.
func TestLoopVolumeTakesOverADirectory(t *testing.T) {
	dataDir := t.TempDir()
	dir, err := AccountDir(dataDir, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "f"), []byte("kept"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/f", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	v := newLoopVolumes(t, dataDir, 2<<20)
	if err := v.Ensure("a"); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "link")); err != nil || string(data) != "kept" {
		t.Errorf("through the link in the volume: %q, %v", data, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "sub")); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("sub: %v, %v; want mode 0750", fi, err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the directory under the volume still holds %v", entries)
	}

	// What does not fit stays where it was, and the server says why.
	big := t.TempDir()
	bigDir, _ := AccountDir(big, "b")
	if _, err := fill(filepath.Join(bigDir, "big"), 4); err != nil {
		t.Fatal(err)
	}
	vb := newLoopVolumes(t, big, 1<<20)
	if err := vb.Ensure("b"); err == nil || !strings.Contains(err.Error(), "fit") {
		t.Errorf("a 4 MiB directory into a 1 MiB quota: %v; want an error saying it does not fit", err)
	}
	if fi, err := os.Stat(filepath.Join(bigDir, "big")); err != nil || fi.Size() != 4<<20 {
		t.Errorf("the directory's file after a failed move: %v, %v", fi, err)
	}
	if _, err := os.Stat(vb.Image("b")); !os.IsNotExist(err) {
		t.Errorf("an image was left after a failed move: %v", err)
	}
}
