package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
