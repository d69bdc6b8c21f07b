package cgroups

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/sys/mountinfo"
	ocgroups "github.com/opencontainers/cgroups"
)

func TestMain(m *testing.M) {
	// The library refuses files that are not on a cgroup file system;
	// the fake hierarchies below are plain directories.
	ocgroups.TestMode = true
	os.Exit(m.Run())
}

// Mount tables as /proc/self/mountinfo shows them.
const (
	// This project's CI host: v1 controllers, an empty v2 beside them.
	hybridMountinfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
`
	// A container on a v1 host without a cgroup namespace: each mount
	// shows only the container's cgroup.
	dockerV1Mountinfo = `700 690 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
701 690 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
`
	unifiedMountinfo = `26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	noMemoryMountinfo = `32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
`
)

func parseMounts(t *testing.T, text string) []*mountinfo.Info {
	t.Helper()
	mounts, err := mountinfo.GetMountsFromReader(strings.NewReader(text), mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		t.Fatal(err)
	}
	return mounts
}

func TestFromMounts(t *testing.T) {
	tests := []struct {
		name      string
		unified   bool
		mountinfo string
		want      Layout
		wantErr   error
	}{
		{"hybrid v1", false, hybridMountinfo, Layout{Hybrid: true, MemoryRoot: "/sys/fs/cgroup/memory", CPURoot: "/sys/fs/cgroup/cpu,cpuacct"}, nil},
		{"v1 in a container", false, dockerV1Mountinfo, Layout{MemoryRoot: "/sys/fs/cgroup/memory", CPURoot: "/sys/fs/cgroup/cpu,cpuacct"}, nil},
		{"v2", true, unifiedMountinfo, Layout{V2: true, MemoryRoot: "/sys/fs/cgroup", CPURoot: "/sys/fs/cgroup"}, nil},
		{"no memory controller", false, noMemoryMountinfo, Layout{}, ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fromMounts(tt.unified, parseMounts(t, tt.mountinfo))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("layout (-want +got):\n%s", diff)
			}
		})
	}
}

// fakeHierarchy writes cgroup files under a temporary root; the mount
// points of mountinfo are rewritten to lie under it.
func fakeHierarchy(t *testing.T, text string, files map[string]string) (root string, mounts []*mountinfo.Info) {
	t.Helper()
	root = t.TempDir()
	mounts = parseMounts(t, strings.ReplaceAll(text, " /sys/fs/cgroup", " "+root))
	for name, content := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root, mounts
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name      string
		unified   bool
		mountinfo string
		files     map[string]string
		own       map[string]string
		want      Limits
	}{
		{
			name: "v2", unified: true, mountinfo: unifiedMountinfo,
			files: map[string]string{"svc/cpu.max": "150000 100000\n", "svc/memory.max": "4294967296\n"},
			own:   map[string]string{"": "/svc"},
			want:  Limits{CPUs: 1.5, MemoryBytes: 4 << 30},
		},
		{
			name: "v2 unlimited", unified: true, mountinfo: unifiedMountinfo,
			files: map[string]string{"cpu.max": "max 100000\n", "memory.max": "max\n"},
			own:   map[string]string{"": "/"},
		},
		{
			name: "hybrid v1", mountinfo: hybridMountinfo,
			files: map[string]string{
				"cpu,cpuacct/docker/x/cpu.cfs_quota_us":  "200000\n",
				"cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n",
				"memory/docker/x/memory.limit_in_bytes":  "9223372036854771712\n",
			},
			own:  map[string]string{"memory": "/docker/x", "cpu": "/docker/x", "cpuacct": "/docker/x", "": "/"},
			want: Limits{CPUs: 2},
		},
		{
			name: "v1 unlimited quota", mountinfo: hybridMountinfo,
			files: map[string]string{
				"cpu,cpuacct/cpu.cfs_quota_us":  "-1\n",
				"cpu,cpuacct/cpu.cfs_period_us": "100000\n",
				"memory/memory.limit_in_bytes":  "1073741824\n",
			},
			own:  map[string]string{"memory": "/", "cpu": "/"},
			want: Limits{MemoryBytes: 1 << 30},
		},
		{
			name: "v1 in a container", mountinfo: dockerV1Mountinfo,
			files: map[string]string{
				"cpu,cpuacct/cpu.cfs_quota_us":  "50000\n",
				"cpu,cpuacct/cpu.cfs_period_us": "100000\n",
				"memory/memory.limit_in_bytes":  "536870912\n",
			},
			own:  map[string]string{"memory": "/docker/abc", "cpu": "/docker/abc"},
			want: Limits{CPUs: 0.5, MemoryBytes: 512 << 20},
		},
		{
			name: "files missing", mountinfo: hybridMountinfo,
			own: map[string]string{"memory": "/gone", "cpu": "/gone"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, mounts := fakeHierarchy(t, tt.mountinfo, tt.files)
			l, err := fromMounts(tt.unified, mounts)
			if err != nil {
				t.Fatal(err)
			}
			if tt.unified {
				l.MemoryRoot, l.CPURoot = root, root
			}
			if got := l.limits(tt.own, mounts); got != tt.want {
				t.Errorf("limits = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestOOMKills(t *testing.T) {
	tests := []struct {
		name   string
		v2     bool
		files  map[string]string
		wantN  int64
		wantOK bool
	}{
		{"v1 killed", false, map[string]string{"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"}, 2, true},
		{"v1 before Linux 4.13", false, map[string]string{"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n"}, 0, false},
		{"v2 none", true, map[string]string{"memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"}, 0, true},
		{"v2 killed", true, map[string]string{"memory.events": "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n"}, 1, true},
		{"cgroup gone", true, nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, _ := fakeHierarchy(t, "", tt.files)
			n, ok := Layout{V2: tt.v2}.OOMKills(root)
			if n != tt.wantN || ok != tt.wantOK {
				t.Errorf("OOMKills = %d, %v; want %d, %v", n, ok, tt.wantN, tt.wantOK)
			}
		})
	}
}

func TestLimitHit(t *testing.T) {
	root, _ := fakeHierarchy(t, "", map[string]string{"hit/memory.failcnt": "3\n", "clean/memory.failcnt": "0\n", "clean/memory.memsw.failcnt": "0\n"})
	var l Layout
	if !l.LimitHit(filepath.Join(root, "hit")) {
		t.Error("LimitHit = false with failcnt 3")
	}
	if l.LimitHit(filepath.Join(root, "clean")) {
		t.Error("LimitHit = true with failcnt 0")
	}
}

func TestSetCPUQuota(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		root, _ := fakeHierarchy(t, "", map[string]string{"w/cpu.max": "100000 100000", "w/cpu.cfs_quota_us": "100000"})
		l := Layout{V2: v2, CPURoot: root}
		if err := l.SetCPUQuota(l.CPUDir("/w"), 25000, 100000); err != nil {
			t.Fatalf("v2=%v: %v", v2, err)
		}
		file, want := "cpu.cfs_quota_us", "25000"
		if v2 {
			file, want = "cpu.max", "25000 100000"
		}
		if got, _ := os.ReadFile(filepath.Join(root, "w", file)); string(got) != want {
			t.Errorf("v2=%v: %s = %q, want %q", v2, file, got, want)
		}
		if err := l.SetCPUQuota(l.CPUDir("/gone"), 25000, 100000); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("v2=%v: a removed cgroup gave %v, want os.ErrNotExist", v2, err)
		}
	}
	if err := (Layout{}).SetCPUQuota("", 1, 1); !errors.Is(err, ErrNoCPUController) {
		t.Errorf("no cpu controller: %v", err)
	}
}

// TestThisHost reads the real layout: CI runs on a hybrid v1 host.
func TestThisHost(t *testing.T) {
	l, err := Detect()
	if err != nil {
		if os.Getenv("ATOLL_REQUIRE_SANDBOX") == "1" {
			t.Fatalf("Detect: %v (ATOLL_REQUIRE_SANDBOX=1)", err)
		}
		t.Skipf("no usable cgroups here: %v", err)
	}
	t.Logf("this host: %+v; own limits %+v", l, OwnLimits())
	file := "memory.limit_in_bytes"
	if l.V2 {
		file = "memory.max"
	}
	if _, err := os.Stat(filepath.Join(l.MemoryDir("/"), file)); err != nil {
		t.Errorf("the memory hierarchy's root has no %s: %v", file, err)
	}
	if l.V2 && l.Hybrid {
		t.Error("a host cannot be both v2 and hybrid")
	}
}

// TestSeparateAgentOnThisHost splits a real cgroup holding two real
// processes, as Settle does a worker's: the "agent" alone in one child,
// the other in the other, each with its quota, the parent empty and held
// to their sum.
func TestSeparateAgentOnThisHost(t *testing.T) {
	l, err := Detect()
	if err == nil && l.CPURoot == "" {
		err = ErrNoCPUController
	}
	if err == nil && os.Geteuid() != 0 {
		err = errors.New("making cgroups needs root")
	}
	if err != nil {
		if os.Getenv("ATOLL_REQUIRE_SANDBOX") == "1" {
			t.Fatalf("%v (ATOLL_REQUIRE_SANDBOX=1)", err)
		}
		t.Skipf("no cgroups to make here: %v", err)
	}
	parent := l.CPUDir(fmt.Sprintf("/atoll-test-separate-%d", os.Getpid()))
	worker := filepath.Join(parent, "w")
	for _, d := range []string{parent, worker} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if l.V2 {
			// The cpu controller for the cgroup below, as the runtime
			// enables it for a worker's.
			if err := ocgroups.WriteFile(filepath.Dir(d), "cgroup.subtree_control", "+cpu"); err != nil {
				t.Fatal(err)
			}
		}
	}
	var procs []*exec.Cmd
	t.Cleanup(func() {
		for _, c := range procs {
			c.Process.Kill()
			c.Wait()
		}
		if err := Remove(parent); err != nil {
			t.Error(err)
		}
	})
	for range 2 {
		c := exec.Command("sleep", "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, c)
		if err := ocgroups.WriteCgroupProc(worker, c.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.setShare(worker, CPUShare{10000, 10000}); err != nil { // the start quota: one core
		t.Fatal(err)
	}
	agent, function := procs[0].Process.Pid, procs[1].Process.Pid
	if err := l.SeparateAgent(worker, agent, CPUShare{2500, 10000}, CPUShare{5000, 10000}); err != nil {
		t.Fatalf("SeparateAgent: %v", err)
	}
	quota := func(dir string) string {
		t.Helper()
		if l.V2 {
			s, _ := ocgroups.ReadFile(dir, "cpu.max")
			return strings.TrimSpace(s)
		}
		q, _ := ocgroups.ReadFile(dir, "cpu.cfs_quota_us")
		p, _ := ocgroups.ReadFile(dir, "cpu.cfs_period_us")
		return strings.TrimSpace(q) + " " + strings.TrimSpace(p)
	}
	for _, c := range []struct {
		dir   string
		quota string
		pids  []int
	}{
		{worker, "7500 10000", nil},
		{filepath.Join(worker, AgentCgroup), "5000 10000", []int{agent}},
		{filepath.Join(worker, FunctionCgroup), "2500 10000", []int{function}},
	} {
		if got := quota(c.dir); got != c.quota {
			t.Errorf("%s: quota %q, want %q", c.dir, got, c.quota)
		}
		pids, err := ocgroups.GetPids(c.dir)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(pids, c.pids) {
			t.Errorf("%s holds %v, want %v", c.dir, pids, c.pids)
		}
	}
}
