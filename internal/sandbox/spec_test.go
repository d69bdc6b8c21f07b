package sandbox

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/atoll-dev/atoll/internal/machine"
)

// fakeGPUs stands for a host with /dev/nvidia0..3 (major 195).
func fakeGPUs(path string) (*gpuDevice, error) {
	minors := map[string]int64{
		"/dev/nvidia0": 0, "/dev/nvidia1": 1, "/dev/nvidia2": 2, "/dev/nvidia3": 3,
		"/dev/nvidiactl": 255,
	}
	if m, ok := minors[path]; ok {
		return &gpuDevice{path: path, major: 195, minor: m, mode: 0o666}, nil
	}
	if path == "/dev/nvidia-uvm" {
		return &gpuDevice{path: path, major: 508, minor: 0, mode: 0o666}, nil
	}
	return nil, nil
}

func testInputs() specInputs {
	return specInputs{
		uid: 1500, gid: 1500,
		cgroupsPath: "/atoll/abcd-w1",
		swapLimit:   true,
		systemDirs: []systemDir{
			{path: "/usr"}, {path: "/bin", linkTo: "usr/bin"}, {path: "/lib", linkTo: "usr/lib"}, {path: "/etc"},
		},
		stateDir:  "/var/lib/atoll/sandbox",
		protected: []string{"/var/lib/atoll"},
		gpuDevice: fakeGPUs,
	}
}

func testWorker() HostSpec {
	return HostSpec{
		ID:            "w1",
		Machine:       machine.Type{Name: "XS", CPUs: 0.25, MemoryBytes: 256 * machine.MiB, Pids: 1024},
		Args:          []string{"/opt/atoll/bin/atoll", "worker"},
		Env:           []string{"HOME=/root", "ATOLL_X=1"},
		ReadOnlyPaths: []string{"/var/lib/atoll/envs/k1/venv", "/usr/lib/python3.11", "/tmp/py"},
		DataDir:       "/var/lib/atoll/accounts/acme/data",
	}
}

func mountByDest(s *specs.Spec, dest string) (specs.Mount, bool) {
	for _, m := range s.Mounts {
		if m.Destination == dest {
			return m, true
		}
	}
	return specs.Mount{}, false
}

func TestBuildSpec(t *testing.T) {
	s, err := buildSpec(testWorker(), testInputs())
	if err != nil {
		t.Fatal(err)
	}
	p := s.Process
	if p.User.UID != 1500 || p.User.GID != 1500 || !p.NoNewPrivileges {
		t.Errorf("user %+v, no_new_privs %v", p.User, p.NoNewPrivileges)
	}
	c := p.Capabilities
	if c == nil || len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) != 0 {
		t.Errorf("capabilities = %+v, want none", c)
	}
	wantEnv := []string{"ATOLL_X=1", "HOME=/home/atoll", "PATH=" + defaultPath, "ATOLL_DATA_DIR=/data"}
	if diff := cmp.Diff(wantEnv, p.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}

	var ns []specs.LinuxNamespaceType
	for _, n := range s.Linux.Namespaces {
		ns = append(ns, n.Type)
	}
	if diff := cmp.Diff([]specs.LinuxNamespaceType{"pid", "mount", "ipc", "uts"}, ns); diff != "" {
		t.Errorf("namespaces (-want +got):\n%s", diff)
	}
	r := s.Linux.Resources
	if *r.CPU.Quota != 10000 || *r.CPU.Period != 10000 {
		t.Errorf("cpu quota %d/%d, want 10000/10000 (XS starts with one core)", *r.CPU.Quota, *r.CPU.Period)
	}
	if *r.Memory.Limit != 256*machine.MiB || *r.Memory.Swap != 256*machine.MiB {
		t.Errorf("memory %d swap %d, want both 256 MiB (no swap)", *r.Memory.Limit, *r.Memory.Swap)
	}
	if *r.Pids.Limit != 1024 {
		t.Errorf("pids %d", *r.Pids.Limit)
	}
	if s.Linux.CgroupsPath != "/atoll/abcd-w1" || !s.Root.Readonly {
		t.Errorf("cgroupsPath %q, readonly root %v", s.Linux.CgroupsPath, s.Root.Readonly)
	}

	var dests []string
	for _, m := range s.Mounts {
		dests = append(dests, m.Destination)
	}
	want := []string{
		"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
		"/usr", "/etc", // /bin and /lib are symlinks into /usr
		"/tmp", "/home/atoll",
		"/tmp/py",                     // after the /tmp tmpfs it would otherwise hide
		"/opt/atoll/bin/atoll",        // the agent binary
		"/var/lib/atoll/envs/k1/venv", // inside the data directory: allowed
		"/data",
	}
	if diff := cmp.Diff(want, dests); diff != "" {
		t.Errorf("mount destinations (-want +got):\n%s", diff)
	}
	for _, d := range []string{"/usr", "/etc", "/tmp/py", "/opt/atoll/bin/atoll", "/var/lib/atoll/envs/k1/venv"} {
		if m, _ := mountByDest(s, d); m.Source != d || !slices.Contains(m.Options, "ro") {
			t.Errorf("mount %s = %+v, want read-only bind of the same path", d, m)
		}
	}
	if m, _ := mountByDest(s, "/data"); m.Source != "/var/lib/atoll/accounts/acme/data" || !slices.Contains(m.Options, "rw") {
		t.Errorf("/data mount = %+v", m)
	}
	if m, _ := mountByDest(s, "/home/atoll"); !slices.Contains(m.Options, "uid=1500") {
		t.Errorf("home not owned by the worker: %+v", m)
	}
}

// TestBuildSpecStartQuota: a worker starts with its type's CPUs, but at
// least one core; Settle lowers it later.
func TestBuildSpecStartQuota(t *testing.T) {
	tests := []struct {
		name   string
		cpus   float64
		want   int64  // 0: no CPU limit
		period uint64 // 0: cpuPeriod
	}{
		{"XS", 0.25, 10000, 0},
		{"S", 0.5, 10000, 0},
		{"one core", 1, 10000, 0},
		{"M", 2, 20000, 0},
		{"fractional above one", 1.5, 15000, 0},
		// 0.05 CPU of 10 ms would be 0.5 ms, under the kernel's 1 ms
		// minimum quota: the period grows to keep 1 ms.
		{"tiny", 0.05, 20000, 20000},
		{"unlimited", 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := testWorker()
			w.Machine.CPUs = tt.cpus
			s, err := buildSpec(w, testInputs())
			if err != nil {
				t.Fatal(err)
			}
			cpu := s.Linux.Resources.CPU
			var got int64
			if cpu != nil {
				got = *cpu.Quota
				want := cpuPeriod
				if tt.period != 0 {
					want = tt.period
				}
				if *cpu.Period != want {
					t.Errorf("period %d, want %d", *cpu.Period, want)
				}
			}
			if got != tt.want {
				t.Errorf("start quota %d, want %d", got, tt.want)
			}
		})
	}
}

func TestBuildSpecOptions(t *testing.T) {
	in := testInputs()
	in.networkNone = true
	in.swapLimit = false
	w := testWorker()
	w.Machine = machine.Type{Name: "free"}
	s, err := buildSpec(w, in)
	if err != nil {
		t.Fatal(err)
	}
	if last := s.Linux.Namespaces[len(s.Linux.Namespaces)-1]; last.Type != specs.NetworkNamespace {
		t.Errorf("network none: no network namespace")
	}
	if r := s.Linux.Resources; r.CPU != nil || r.Memory != nil || r.Pids != nil {
		t.Errorf("a type without limits got %+v", r)
	}
	w.Machine = machine.Type{Name: "XS", MemoryBytes: 256 * machine.MiB}
	s, _ = buildSpec(w, in)
	if s.Linux.Resources.Memory.Swap != nil {
		t.Errorf("swap limit set on a host without swap accounting")
	}
}

func TestBuildSpecRefuses(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*HostSpec)
	}{
		{"bad ID", func(w *HostSpec) { w.ID = "../x" }},
		{"relative agent", func(w *HostSpec) { w.Args = []string{"atoll"} }},
		{"no agent", func(w *HostSpec) { w.Args = nil }},
		{"relative read-only path", func(w *HostSpec) { w.ReadOnlyPaths = []string{"venv"} }},
		{"protected directory", func(w *HostSpec) { w.ReadOnlyPaths = []string{"/var/lib/atoll"} }},
		{"ancestor of protected", func(w *HostSpec) { w.ReadOnlyPaths = []string{"/var"} }},
		{"state directory", func(w *HostSpec) { w.ReadOnlyPaths = []string{"/var/lib/atoll/sandbox/bundles/w2"} }},
		{"data dir is protected", func(w *HostSpec) { w.DataDir = "/var/lib" }},
		{"over /proc", func(w *HostSpec) { w.ReadOnlyPaths = []string{"/proc/1"} }},
		{"GPU without device", func(w *HostSpec) { w.GPUs = []int{7} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := testWorker()
			tt.mutate(&w)
			if _, err := buildSpec(w, testInputs()); !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("buildSpec = %v, want ErrInvalidSpec", err)
			}
		})
	}
}

// TestGPUAssignment follows GPUs from a declared inventory through
// capacity to the spec: each worker gets only its own device nodes.
func TestGPUAssignment(t *testing.T) {
	cfg, err := machine.ParseConfig([]byte(`
gpus:
  - {index: 0, model: Tesla T4}
  - {index: 1, model: Tesla T4}
  - {index: 2, model: NVIDIA A100-SXM4-40GB}
  - {index: 3, model: Tesla T4}
`))
	if err != nil {
		t.Fatal(err)
	}
	capacity := machine.NewCapacity(cfg.Host(machine.Host{CPUs: 64, MemoryBytes: 512 * machine.GiB}))
	t4, err := cfg.Catalog().Lookup("GPU-T4")
	if err != nil {
		t.Fatal(err)
	}
	a100, _ := cfg.Catalog().Lookup("GPU")

	devicesOf := func(gpus []int) (nodes []string, env string) {
		t.Helper()
		w := testWorker()
		w.GPUs = gpus
		s, err := buildSpec(w, testInputs())
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range s.Linux.Devices {
			nodes = append(nodes, d.Path)
		}
		for _, e := range s.Process.Env {
			if v, ok := strings.CutPrefix(e, "CUDA_VISIBLE_DEVICES="); ok {
				env = v
			}
		}
		allowed := 0
		for _, rule := range s.Linux.Resources.Devices {
			if rule.Allow {
				allowed++
			}
		}
		if allowed != len(nodes) {
			t.Errorf("%d devices but %d cgroup allow rules", len(nodes), allowed)
		}
		return nodes, env
	}
	ctx := context.Background()
	var got [][]string
	for _, typ := range []machine.Type{t4, a100, t4} {
		g, err := capacity.Acquire(ctx, typ)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Release()
		nodes, env := devicesOf(g.GPUs())
		got = append(got, append(nodes, "CUDA_VISIBLE_DEVICES="+env))
	}
	want := [][]string{
		{"/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "CUDA_VISIBLE_DEVICES=0"},
		{"/dev/nvidia2", "/dev/nvidiactl", "/dev/nvidia-uvm", "CUDA_VISIBLE_DEVICES=2"},
		{"/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm", "CUDA_VISIBLE_DEVICES=1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("devices per worker (-want +got):\n%s", diff)
	}
}
