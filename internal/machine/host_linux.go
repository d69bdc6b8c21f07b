package machine

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

func detectCPUAndMemory() (Host, error) {
	h := Host{CPUs: float64(runtime.NumCPU())}
	mem, err := memTotal("/proc/meminfo")
	if err != nil {
		return Host{}, err
	}
	h.MemoryBytes = mem
	cg := ownCgroupLimits()
	if cg.cpus > 0 && cg.cpus < h.CPUs {
		h.CPUs = cg.cpus
	}
	if cg.memory > 0 && cg.memory < h.MemoryBytes {
		h.MemoryBytes = cg.memory
	}
	return h, nil
}

func memTotal(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read memory size: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read memory size: bad MemTotal %q", f[1])
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("read memory size: no MemTotal in %s", path)
}

type cgroupLimits struct {
	cpus   float64
	memory int64
}

// ownCgroupLimits reads the CPU quota and memory limit of this process's
// own cgroup (a server in a container with --cpus or --memory). Any
// problem reading them means "no limit": the hardware figures stand.
func ownCgroupLimits() cgroupLimits {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return cgroupLimits{}
	}
	return readCgroupLimits("/sys/fs/cgroup", data)
}

// readCgroupLimits understands both layouts: cgroup v2 ("0::/path" with
// cpu.max and memory.max) and v1 (per-controller hierarchies under
// root/<controller>).
func readCgroupLimits(root string, procCgroup []byte) cgroupLimits {
	var lim cgroupLimits
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		for _, line := range strings.Split(string(procCgroup), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				dir := filepath.Join(root, p)
				lim.cpus = cpuMaxV2(readTrim(filepath.Join(dir, "cpu.max")))
				lim.memory = parseLimit(readTrim(filepath.Join(dir, "memory.max")))
			}
		}
		return lim
	}
	for _, line := range strings.Split(string(procCgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			switch ctrl {
			case "cpu":
				dir := filepath.Join(root, "cpu", parts[2])
				quota, err1 := strconv.ParseInt(readTrim(filepath.Join(dir, "cpu.cfs_quota_us")), 10, 64)
				period, err2 := strconv.ParseInt(readTrim(filepath.Join(dir, "cpu.cfs_period_us")), 10, 64)
				if err1 == nil && err2 == nil && quota > 0 && period > 0 {
					lim.cpus = float64(quota) / float64(period)
				}
			case "memory":
				lim.memory = parseLimit(readTrim(filepath.Join(root, "memory", parts[2], "memory.limit_in_bytes")))
			}
		}
	}
	return lim
}

func readTrim(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// cpuMaxV2 parses cgroup v2 cpu.max ("max 100000" or "50000 100000").
func cpuMaxV2(s string) float64 {
	f := strings.Fields(s)
	if len(f) != 2 || f[0] == "max" {
		return 0
	}
	quota, err1 := strconv.ParseInt(f[0], 10, 64)
	period, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || period <= 0 {
		return 0
	}
	return float64(quota) / float64(period)
}

// parseLimit reads a memory limit; "max" and the v1 "unlimited" value (a
// huge page-aligned number) both mean none.
func parseLimit(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0
	}
	return n
}
