package sandbox

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/atoll-dev/atoll/internal/machine"
)

// Paths inside the container.
const (
	homeDir = "/home/atoll"
	dataDir = "/data"
)

// cpuPeriod is the CFS period a worker's CPU quota is expressed in: 10 ms,
// not the kernel's default of 100 ms. A worker that has spent its quota
// waits out the rest of the period: at 0.25 CPU up to 75 ms of every
// 100 ms (a loop of warm calls on XS stalled 30 to 50 ms once a period, a
// p99 of 36 ms), but at most 7.5 ms of every 10 ms, for the same share.
const cpuPeriod uint64 = 10_000

// minCPUQuota is the kernel's smallest CFS quota (1 ms).
const minCPUQuota = 1_000

// maxCPUPeriod is the kernel's longest CFS period (1 s).
const maxCPUPeriod = 1_000_000

// cpuPeriodFor is the period for a type of cpus CPUs: cpuPeriod, or longer
// for a type so small that its quota would fall under the kernel's minimum.
func cpuPeriodFor(cpus float64) uint64 {
	if cpus*float64(cpuPeriod) >= minCPUQuota {
		return cpuPeriod
	}
	return min(uint64(math.Ceil(minCPUQuota/cpus)), maxCPUPeriod)
}

// startCPUs is the CPU quota a worker of type m starts with: its type's,
// but at least one core. Starting a worker (the runtime's init, the agent,
// the Python interpreter and the runner importing its modules) is atoll's
// overhead, not the user's code, and throttled to a fraction of a core it
// takes several times as long (a cold start in XS, at 0.25 CPU, took about
// 300 ms against 130 ms in M). The type's own quota holds for every call:
// Settle lowers it to the type's own quota once the agent reports ready,
// before its first call runs.
func startCPUs(m machine.Type) float64 { return max(m.CPUs, 1) }

// agentCPUs is the CPU quota of a worker's agent, in a cgroup of its own
// beside the function's (see Settle): its type's, but at least half a core.
// The agent only relays what the server sends and the function writes, so
// the function's own quota bounds its work; a quota of its own bounds it
// again.
func agentCPUs(m machine.Type) float64 { return max(m.CPUs, 0.5) }

// cpuQuota is the CFS quota, per period, that allows cpus CPUs.
func cpuQuota(cpus float64, period uint64) int64 { return int64(cpus * float64(period)) }

// defaultPath is PATH when the worker's environment has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// systemDirCandidates are the host directories a worker sees read-only.
var systemDirCandidates = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"}

// systemDir is one host system directory: bind-mounted, or, on merged-/usr
// hosts where it is a symlink (/bin -> usr/bin), recreated as the same
// symlink in the root filesystem.
type systemDir struct {
	path   string
	linkTo string // symlink target, when the host's path is a symlink
}

// gpuDevice is a host device node to pass through.
type gpuDevice struct {
	path         string
	major, minor int64
	mode         uint32
}

// specInputs is everything buildSpec needs besides the worker spec; it is
// gathered from the host by the launcher, so buildSpec itself is pure.
type specInputs struct {
	uid, gid    uint32
	networkNone bool
	netnsPath   string // NetworkIsolated: the namespace prepared for the worker
	resolvConf  string // NetworkIsolated: the file mounted at /etc/resolv.conf
	cgroupsPath string
	swapLimit   bool // the host accounts swap, so memory+swap can be capped
	systemDirs  []systemDir
	stateDir    string                                // never mounted, nor anything overlapping it
	runDir      string                                // the same, where bundles live elsewhere (memoryRunDir)
	protected   []string                              // never mounted, nor any ancestor
	gpuDevice   func(path string) (*gpuDevice, error) // nil, nil when absent

	// agentUID and agentGID, when set, run the agent apart from the
	// runner (see splitUsers).
	agentUID, agentGID uint32
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func validID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("%w: worker ID %q must be 1-128 letters, digits, '_', '-' or '.'", ErrInvalidSpec, id)
	}
	return nil
}

// buildSpec generates the runtime spec for one worker.
func buildSpec(w HostSpec, in specInputs) (*specs.Spec, error) {
	if err := validID(w.ID); err != nil {
		return nil, err
	}
	if len(w.Args) == 0 || !filepath.IsAbs(w.Args[0]) {
		return nil, fmt.Errorf("%w: agent path must be absolute (got %q)", ErrInvalidSpec, strings.Join(w.Args, " "))
	}
	mounts, err := buildMounts(w, in)
	if err != nil {
		return nil, err
	}

	env := append([]string(nil), w.Env...)
	env = setEnv(env, "HOME", homeDir)
	if !hasEnv(env, "PATH") {
		env = append(env, "PATH="+defaultPath)
	}
	if w.DataDir != "" {
		env = setEnv(env, "ATOLL_DATA_DIR", dataDir)
	}

	linux := &specs.Linux{
		Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace},
			{Type: specs.MountNamespace},
			{Type: specs.IPCNamespace},
			{Type: specs.UTSNamespace},
		},
		CgroupsPath:   in.cgroupsPath,
		Resources:     resources(w, in),
		Seccomp:       DefaultSeccomp(),
		MaskedPaths:   maskedPaths(),
		ReadonlyPaths: readonlyPaths(),
	}
	linux.Namespaces = append(linux.Namespaces, networkNamespace(in)...)
	mounts = append(mounts, networkMounts(in)...)
	if len(w.GPUs) > 0 {
		devs, err := gpuDevices(w.GPUs, in.gpuDevice)
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			mode := os.FileMode(d.mode & 0o777)
			zero := uint32(0)
			linux.Devices = append(linux.Devices, specs.LinuxDevice{
				Path: d.path, Type: "c", Major: d.major, Minor: d.minor,
				FileMode: &mode, UID: &zero, GID: &zero,
			})
			major, minor := d.major, d.minor
			linux.Resources.Devices = append(linux.Resources.Devices, specs.LinuxDeviceCgroup{
				Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rwm",
			})
		}
		env = setEnv(env, "CUDA_DEVICE_ORDER", "PCI_BUS_ID")
		env = setEnv(env, "CUDA_VISIBLE_DEVICES", joinInts(w.GPUs))
	}

	oomScoreAdj := 500 // the kernel should pick a worker before the server
	noCaps := &specs.LinuxCapabilities{
		Bounding: []string{}, Effective: []string{}, Inheritable: []string{},
		Permitted: []string{}, Ambient: []string{},
	}
	spec := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			User:            specs.User{UID: in.uid, GID: in.gid},
			Args:            append([]string(nil), w.Args...),
			Env:             env,
			Cwd:             homeDir,
			Capabilities:    noCaps,
			NoNewPrivileges: true,
			OOMScoreAdj:     &oomScoreAdj,
			// No rlimits: the worker inherits the server's (raising them
			// past the host's hard limits would fail on some hosts).
		},
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Hostname: "atoll",
		Mounts:   mounts,
		Linux:    linux,
	}
	splitUsers(spec, in)
	return spec, nil
}

func hasEnv(env []string, key string) bool {
	return slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, key+"=") })
}

func resources(w HostSpec, in specInputs) *specs.LinuxResources {
	r := &specs.LinuxResources{
		// Deny every device but those the runtime adds by default (null,
		// zero, random, tty...) and the GPUs appended later.
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	m := w.Machine
	if m.CPUs > 0 {
		period := cpuPeriodFor(m.CPUs)
		quota := cpuQuota(startCPUs(m), period)
		r.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if m.MemoryBytes > 0 {
		limit := m.MemoryBytes
		r.Memory = &specs.LinuxMemory{Limit: &limit}
		if in.swapLimit {
			// memory.swap is memory plus swap: equal to the limit, the
			// worker cannot swap (see machine.Type.MemoryBytes).
			swap := m.MemoryBytes
			r.Memory.Swap = &swap
		}
	}
	if m.Pids > 0 {
		pids := m.Pids
		r.Pids = &specs.LinuxPids{Limit: &pids}
	}
	return r
}

func buildMounts(w HostSpec, in specInputs) ([]specs.Mount, error) {
	shmSize := "65536k"
	if w.Machine.MemoryBytes > 0 {
		// /dev/shm is charged to the worker's memory anyway; let it use
		// all of it (PyTorch data loaders do).
		shmSize = strconv.FormatInt(w.Machine.MemoryBytes/1024, 10) + "k"
	}
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=" + shmSize}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		// The worker's own cgroup only (the runtime bind-mounts it), so
		// libraries that size pools from the CPU quota see the right one.
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
	var covered []string // host paths already visible, read-only, at the same path
	for _, d := range in.systemDirs {
		covered = append(covered, d.path)
		if d.linkTo == "" {
			mounts = append(mounts, roBind(d.path))
		}
	}
	mounts = append(mounts,
		specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		specs.Mount{Destination: homeDir, Type: "tmpfs", Source: "tmpfs", Options: []string{
			"nosuid", "nodev", "mode=700", fmt.Sprintf("uid=%d", in.uid), fmt.Sprintf("gid=%d", in.gid),
		}},
	)

	ro := slices.Clone(w.ReadOnlyPaths)
	ro = append(ro, w.Args[0])
	for i, p := range ro {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("%w: read-only path %q is not absolute", ErrInvalidSpec, p)
		}
		ro[i] = filepath.Clean(p)
	}
	// Parents before children, so a child is skipped as covered.
	slices.SortStableFunc(ro, func(a, b string) int { return len(a) - len(b) })
	for _, p := range ro {
		if isUnderAny(p, covered) {
			continue
		}
		if isUnderAny(p, []string{"/proc", "/dev", "/sys", homeDir, dataDir}) || p == "/" {
			return nil, fmt.Errorf("%w: read-only path %s would hide part of the sandbox", ErrInvalidSpec, p)
		}
		if err := checkExposure(p, in); err != nil {
			return nil, err
		}
		mounts = append(mounts, roBind(p))
		covered = append(covered, p)
	}
	if w.DataDir != "" {
		src := filepath.Clean(w.DataDir)
		if !filepath.IsAbs(src) {
			return nil, fmt.Errorf("%w: data directory %q is not absolute", ErrInvalidSpec, w.DataDir)
		}
		if err := checkExposure(src, in); err != nil {
			return nil, err
		}
		mounts = append(mounts, specs.Mount{Destination: dataDir, Type: "bind", Source: src, Options: []string{"rbind", "rw", "nosuid", "nodev"}})
	}
	return mounts, nil
}

// roBind mounts a host path read-only at the same path. Sub-mounts stay as
// the host has them (rbind) but are only reachable through the read-only
// parent, and the unprivileged user's permissions apply.
func roBind(p string) specs.Mount {
	return specs.Mount{Destination: p, Type: "bind", Source: p, Options: []string{"rbind", "ro", "nosuid", "nodev"}}
}

// checkExposure refuses a mount source that is, or contains, a protected
// path, or that overlaps the launcher's state directory (other workers'
// bundles).
func checkExposure(src string, in specInputs) error {
	for _, d := range []string{in.stateDir, in.runDir} {
		if d != "" && (isUnder(src, d) || isUnder(d, src)) {
			return fmt.Errorf("%w: %s overlaps the sandbox state directory", ErrInvalidSpec, src)
		}
	}
	for _, p := range in.protected {
		if isUnder(p, src) {
			return fmt.Errorf("%w: mounting %s would expose %s", ErrInvalidSpec, src, p)
		}
	}
	return nil
}

// isUnder reports whether p is dir or inside it.
func isUnder(p, dir string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

func isUnderAny(p string, dirs []string) bool {
	return slices.ContainsFunc(dirs, func(d string) bool { return isUnder(p, d) })
}

// gpuDevices lists the device nodes for the given GPU indexes: one
// /dev/nvidiaN each (required) and the driver's shared control nodes
// (where present).
func gpuDevices(gpus []int, stat func(string) (*gpuDevice, error)) ([]gpuDevice, error) {
	if stat == nil {
		return nil, fmt.Errorf("%w: GPUs requested but device nodes cannot be read on this host", ErrInvalidSpec)
	}
	var out []gpuDevice
	for _, i := range gpus {
		path := "/dev/nvidia" + strconv.Itoa(i)
		d, err := stat(path)
		if err != nil {
			return nil, fmt.Errorf("gpu %d: %w", i, err)
		}
		if d == nil {
			return nil, fmt.Errorf("%w: GPU %d assigned but %s does not exist", ErrInvalidSpec, i, path)
		}
		out = append(out, *d)
	}
	for _, path := range []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"} {
		d, err := stat(path)
		if err != nil {
			return nil, err
		}
		if d != nil {
			out = append(out, *d)
		}
	}
	return out, nil
}

// maskedPaths are the kernel files a sandbox hides (the container
// default's list): what they show of the host is none of its business.
func maskedPaths() []string {
	return []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/proc/scsi", "/sys/firmware",
	}
}

// readonlyPaths are the kernel files a sandbox may read but never write.
func readonlyPaths() []string {
	return []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
}

// absPaths makes every path of paths absolute, in place.
func absPaths(paths []string) error {
	for i, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		paths[i] = abs
	}
	return nil
}
