package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	ocgroups "github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fscommon"
	"golang.org/x/sys/unix"
)

// unifiedRoot is where a cgroup v2 host mounts its one hierarchy.
const unifiedRoot = "/sys/fs/cgroup"

// Detect reads how this host mounts cgroups. It fails, wrapping
// ErrUnsupported, where no memory controller is mounted: a worker's
// memory limit could not be enforced.
func Detect() (Layout, error) {
	l, _, err := detect()
	return l, err
}

// detect also returns the cgroup mounts it read, for OwnLimits.
func detect() (Layout, []*mountinfo.Info, error) {
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return Layout{}, nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	l, err := fromMounts(ocgroups.IsCgroup2UnifiedMode(), mounts)
	return l, mounts, err
}

// fromMounts builds the layout from the host's cgroup mounts; unified
// says whether /sys/fs/cgroup itself is a cgroup2 file system.
func fromMounts(unified bool, mounts []*mountinfo.Info) (Layout, error) {
	if unified {
		return Layout{V2: true, MemoryRoot: unifiedRoot, CPURoot: unifiedRoot}, nil
	}
	var l Layout
	for _, m := range mounts {
		switch m.FSType {
		case "cgroup2":
			l.Hybrid = true
		case "cgroup":
			for _, o := range strings.Split(m.VFSOptions, ",") {
				switch {
				case o == "memory" && l.MemoryRoot == "":
					l.MemoryRoot = m.Mountpoint
				case o == "cpu" && l.CPURoot == "":
					l.CPURoot = m.Mountpoint
				}
			}
		}
	}
	if l.MemoryRoot == "" {
		return Layout{}, fmt.Errorf("%w: no cgroup memory controller is mounted", ErrUnsupported)
	}
	return l, nil
}

// SetCPUQuota sets the CFS quota of the cpu cgroup in dir, per period
// microseconds, by writing its file as the runtime would: a file write,
// not a runtime process, so it costs microseconds. A cgroup that is gone
// gives an error wrapping os.ErrNotExist (the file is never created).
func (l Layout) SetCPUQuota(dir string, quota int64, period uint64) error {
	if dir == "" {
		return ErrNoCPUController
	}
	file, value := "cpu.cfs_quota_us", strconv.FormatInt(quota, 10)
	if l.V2 {
		file, value = "cpu.max", fmt.Sprintf("%d %d", quota, period)
	}
	return ocgroups.WriteFile(dir, file, value)
}

// SeparateAgent splits the worker's cpu cgroup in dir in two: the
// process agent (the worker's agent, its container's init) goes into a
// child cgroup AgentCgroup held to agent, and every other process (the
// Python runner, and whatever it started) into FunctionCgroup, held to
// function. Processes they start later stay in their parent's cgroup. The
// worker's own cgroup is held to the sum, and so stays bounded even if a
// process were left in it. It must run once, before the worker's first
// call; on cgroup v2 it enables the cpu controller for the children, which
// the kernel allows only once dir itself holds no process.
//
// A cgroup that is gone gives an error wrapping os.ErrNotExist.
func (l Layout) SeparateAgent(dir string, agent int, function, agentShare CPUShare) error {
	if dir == "" {
		return ErrNoCPUController
	}
	agentDir, fnDir := filepath.Join(dir, AgentCgroup), filepath.Join(dir, FunctionCgroup)
	for _, d := range []string{agentDir, fnDir} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("make cgroup %s: %w", d, err)
		}
	}
	if !l.V2 {
		// v1 applies a child's quota at once, and refuses one above its
		// parent's: the worker still has its start quota (at least one CPU).
		if err := l.setShares(agentDir, fnDir, function, agentShare); err != nil {
			return err
		}
	}
	if err := ocgroups.WriteCgroupProc(agentDir, agent); err != nil {
		return fmt.Errorf("move the agent (pid %d) into %s: %w", agent, agentDir, err)
	}
	if err := moveAll(dir, fnDir); err != nil {
		return err
	}
	if l.V2 {
		if err := ocgroups.WriteFile(dir, "cgroup.subtree_control", "+cpu"); err != nil {
			return fmt.Errorf("enable the cpu controller under %s: %w", dir, err)
		}
		if err := l.setShares(agentDir, fnDir, function, agentShare); err != nil {
			return err
		}
	}
	// The sum, per the function's period (the agent's quota converted to
	// it: the two periods may differ).
	total := function.Quota + int64(float64(agentShare.Quota)*float64(function.Period)/float64(agentShare.Period))
	return l.SetCPUQuota(dir, total, function.Period)
}

func (l Layout) setShares(agentDir, fnDir string, function, agent CPUShare) error {
	if err := l.setShare(agentDir, agent); err != nil {
		return err
	}
	return l.setShare(fnDir, function)
}

// setShare sets the quota and period of the cpu cgroup in dir.
func (l Layout) setShare(dir string, s CPUShare) error {
	if !l.V2 {
		// The period first: the quota, checked against it, may be longer
		// than the period the cgroup starts with.
		if err := ocgroups.WriteFile(dir, "cpu.cfs_period_us", strconv.FormatUint(s.Period, 10)); err != nil {
			return err
		}
	}
	return l.SetCPUQuota(dir, s.Quota, s.Period)
}

// moveAll moves every process of the cgroup in from into the cgroup in
// to. A process forked while the list was read is moved in the next
// round; one that exits meanwhile is no error.
func moveAll(from, to string) error {
	for range 100 {
		pids, err := ocgroups.GetPids(from)
		if err != nil {
			return fmt.Errorf("list the processes of %s: %w", from, err)
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			if err := ocgroups.WriteCgroupProc(to, pid); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("move pid %d into %s: %w", pid, to, err)
			}
		}
	}
	return fmt.Errorf("processes of %s kept appearing while they were moved into %s", from, to)
}

// SwapLimit reports whether memory plus swap can be limited. On v1 that
// needs swap accounting (memory.memsw.*); on v2 the runtime writes
// memory.swap.max and skips it where swap is not accounted.
func (l Layout) SwapLimit() bool {
	return l.V2 || ocgroups.PathExists(filepath.Join(l.MemoryRoot, "memory.memsw.limit_in_bytes"))
}

// OOMKills returns how many processes the kernel killed in the memory
// cgroup in dir for exceeding its limit. ok is false when the cgroup or
// the counter does not exist (v1 before Linux 4.13 keeps none).
func (l Layout) OOMKills(dir string) (n int64, ok bool) {
	file := "memory.oom_control"
	if l.V2 {
		file = "memory.events" // counts the cgroup's descendants too
	}
	data, err := ocgroups.ReadFile(dir, file)
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(data, "\n") {
		if k, v, err := fscommon.ParseKeyValue(line); err == nil && k == "oom_kill" {
			return int64(v), true
		}
	}
	return 0, false
}

// LimitHit reports whether the memory cgroup in dir ever failed to charge
// memory at its limit (v1 failcnt), for kernels without an OOM kill
// counter.
func (l Layout) LimitHit(dir string) bool {
	for _, f := range []string{"memory.memsw.failcnt", "memory.failcnt"} {
		if n, err := fscommon.GetCgroupParamUint(dir, f); err == nil && n > 0 {
			return true
		}
	}
	return false
}

// Remove deletes a cgroup made for a worker, once its processes are gone;
// one that does not exist is no error.
func Remove(dir string) error {
	if err := ocgroups.RemovePath(dir); err != nil {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
}

// OwnLimits reads the CPU quota and memory limit of this process's own
// cgroup (a server in a container with --cpus or --memory). Any problem
// reading them means "no limit": the hardware figures stand.
func OwnLimits() Limits {
	l, mounts, err := detect()
	if err != nil {
		return Limits{}
	}
	own, err := ocgroups.ParseCgroupFile("/proc/self/cgroup")
	if err != nil {
		return Limits{}
	}
	return l.limits(own, mounts)
}

// limits reads the limits of the cgroups in own (controller to path, as
// /proc/self/cgroup lists them; "" is the v2 hierarchy's).
func (l Layout) limits(own map[string]string, mounts []*mountinfo.Info) Limits {
	var lim Limits
	if l.V2 {
		path, ok := own[""]
		if !ok {
			return lim
		}
		dir := ownDir(l.MemoryRoot, path, mounts)
		lim.CPUs = cpuMax(readTrim(dir, "cpu.max"))
		lim.MemoryBytes = memoryLimit(dir, "memory.max")
		return lim
	}
	if path, ok := own["cpu"]; ok && l.CPURoot != "" {
		dir := ownDir(l.CPURoot, path, mounts)
		quota, err1 := fscommon.GetCgroupParamInt(dir, "cpu.cfs_quota_us")
		period, err2 := fscommon.GetCgroupParamInt(dir, "cpu.cfs_period_us")
		if err1 == nil && err2 == nil && quota > 0 && period > 0 {
			lim.CPUs = float64(quota) / float64(period)
		}
	}
	if path, ok := own["memory"]; ok {
		lim.MemoryBytes = memoryLimit(ownDir(l.MemoryRoot, path, mounts), "memory.limit_in_bytes")
	}
	return lim
}

// ownDir is the host directory of the cgroup path in the hierarchy
// mounted at mountpoint. Inside a container without a cgroup namespace
// the mount shows only the container's part of the hierarchy (its root
// is the container's cgroup): the path is made relative to that root.
func ownDir(mountpoint, path string, mounts []*mountinfo.Info) string {
	for _, m := range mounts {
		if m.Mountpoint != mountpoint {
			continue
		}
		if rel, err := filepath.Rel(m.Root, path); err == nil && !strings.HasPrefix(rel, "..") {
			return filepath.Join(mountpoint, rel)
		}
	}
	return filepath.Join(mountpoint, path)
}

func readTrim(dir, file string) string {
	s, err := fscommon.GetCgroupParamString(dir, file)
	if err != nil {
		return ""
	}
	return s
}

// cpuMax parses cgroup v2 cpu.max ("max 100000" or "50000 100000").
func cpuMax(s string) float64 {
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

// memoryLimit reads a memory limit; "max" and the v1 "unlimited" value (a
// huge page-aligned number) both mean none.
func memoryLimit(dir, file string) int64 {
	n, err := fscommon.GetCgroupParamInt(dir, file)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0
	}
	return n
}
