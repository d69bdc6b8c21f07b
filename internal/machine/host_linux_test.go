package machine

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadCgroupLimits(t *testing.T) {
	write := func(t *testing.T, path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("v2", func(t *testing.T) {
		root := t.TempDir()
		write(t, filepath.Join(root, "cgroup.controllers"), "cpu memory pids\n")
		write(t, filepath.Join(root, "svc/cpu.max"), "150000 100000\n")
		write(t, filepath.Join(root, "svc/memory.max"), "4294967296\n")
		got := readCgroupLimits(root, []byte("0::/svc\n"))
		if got.cpus != 1.5 || got.memory != 4*GiB {
			t.Errorf("got %+v, want 1.5 CPU and 4 GiB", got)
		}
	})
	t.Run("v2 unlimited", func(t *testing.T) {
		root := t.TempDir()
		write(t, filepath.Join(root, "cgroup.controllers"), "cpu memory\n")
		write(t, filepath.Join(root, "cpu.max"), "max 100000\n")
		write(t, filepath.Join(root, "memory.max"), "max\n")
		if got := readCgroupLimits(root, []byte("0::/\n")); got != (cgroupLimits{}) {
			t.Errorf("got %+v, want no limits", got)
		}
	})
	t.Run("v1", func(t *testing.T) {
		root := t.TempDir()
		write(t, filepath.Join(root, "cpu/docker/x/cpu.cfs_quota_us"), "200000\n")
		write(t, filepath.Join(root, "cpu/docker/x/cpu.cfs_period_us"), "100000\n")
		write(t, filepath.Join(root, "memory/docker/x/memory.limit_in_bytes"), "9223372036854771712\n")
		got := readCgroupLimits(root, []byte("4:memory:/docker/x\n2:cpu,cpuacct:/docker/x\n0::/\n"))
		if got.cpus != 2 || got.memory != 0 {
			t.Errorf("got %+v, want 2 CPU and no memory limit", got)
		}
	})
}
