package cgroups

import "path/filepath"

// Layout is how this host mounts cgroups. On cgroup v1 (and hybrid hosts,
// where v2 is mounted beside v1 without controllers) the memory and cpu
// controllers each have their own hierarchy; on v2 there is one.
type Layout struct {
	// V2 is the unified hierarchy: every controller under one mount.
	V2 bool
	// Hybrid is v1 controllers plus a cgroup2 hierarchy without any.
	Hybrid bool
	// MemoryRoot is the mount point of the hierarchy with the memory
	// controller.
	MemoryRoot string
	// CPURoot is the mount point of the hierarchy with the cpu
	// controller, or "" where none is mounted.
	CPURoot string
}

// MemoryDir is the host directory of a cgroups path's memory cgroup.
func (l Layout) MemoryDir(cgroupsPath string) string {
	return filepath.Join(l.MemoryRoot, cgroupsPath)
}

// CPUDir is the host directory of a cgroups path's cpu cgroup, or "" where
// no cpu controller is mounted.
func (l Layout) CPUDir(cgroupsPath string) string {
	if l.CPURoot == "" {
		return ""
	}
	return filepath.Join(l.CPURoot, cgroupsPath)
}

// Limits are the CPU quota and memory limit of a cgroup; zero means none.
type Limits struct {
	CPUs        float64
	MemoryBytes int64
}

// The two cpu cgroups SeparateAgent makes inside a worker's.
const (
	AgentCgroup    = "agent"
	FunctionCgroup = "function"
)

// CPUShare is a CFS quota, per Period microseconds.
type CPUShare struct {
	Quota  int64
	Period uint64
}
