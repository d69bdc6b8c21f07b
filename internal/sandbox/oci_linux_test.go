package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ocgroups "github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fscommon"
	"golang.org/x/sys/unix"

	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/sandbox/cgroups"
	"github.com/atoll-dev/atoll/internal/scheduler"
)

// testXS is the XS machine type with less memory, so the OOM tests are
// quick.
var testXS = machine.Type{Name: "XS", CPUs: 0.25, MemoryBytes: 64 * machine.MiB, Pids: 64}

var workerSeq atomic.Int64

func workerID(t *testing.T) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	return fmt.Sprintf("w%d-%s", workerSeq.Add(1), strings.Trim(name, "-"))
}

// requireRuntime skips unless this host can run OCI containers with kind.
// With ATOLL_REQUIRE_SANDBOX=1 (as CI sets it) a missing runtime, root or
// cgroup fails the test instead: CI must not pass by skipping them.
func requireRuntime(t *testing.T, kind string) {
	t.Helper()
	missing := t.Skipf
	if os.Getenv("ATOLL_REQUIRE_SANDBOX") == "1" {
		missing = t.Fatalf
	}
	if os.Geteuid() != 0 {
		missing("OCI sandbox tests need root (euid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath(kind); err != nil {
		missing("%s is not installed", kind)
	}
	cg, err := cgroups.Detect()
	if err != nil {
		missing("no usable cgroups: %v", err)
	}
	if kind == KindCrun && cg.Hybrid {
		// A limit of crun's, not a missing install: no host setting can
		// give this host crun, so it skips even in CI.
		t.Skip("crun does not support this hybrid cgroup v1+v2 host")
	}
}

type ociFixture struct {
	l       *OCILauncher
	dataDir string // stands for the server's data directory
	secret  string // a file in it no worker may see
	stderr  *syncBuffer
}

func newOCIFixture(t *testing.T, kind string, mutate func(*OCIOptions)) *ociFixture {
	t.Helper()
	requireRuntime(t, kind)
	dataDir := filepath.Join(t.TempDir(), "server-data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dataDir, "keys.db")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	opts := OCIOptions{
		Runtime:      kind,
		StateDir:     filepath.Join(dataDir, "sandbox"),
		Protected:    []string{dataDir},
		CgroupParent: "/atoll-test",
		Stderr:       stderr,
	}
	if mutate != nil {
		mutate(&opts)
	}
	l, err := NewOCI(opts)
	if err != nil {
		t.Fatalf("NewOCI: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("workers' stderr:\n%s", stderr)
		}
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &ociFixture{l: l, dataDir: dataDir, secret: secret, stderr: stderr}
}

func (f *ociFixture) start(t *testing.T, spec HostSpec) *agent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := f.l.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v\nstderr:\n%s", err, f.stderr)
	}
	return newAgent(t, p)
}

func TestOCIEchoIdentityAndLimits(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	spec := helperSpec(t, workerID(t))
	spec.Machine = testXS
	a := f.start(t, spec)

	if got := a.call("echo hello, worker"); got != "hello, worker" {
		t.Fatalf("echo = %q", got)
	}
	var r report
	a.callJSON("report", &r)
	t.Logf("inside: uid=%d gid=%d CapEff=%s CapBnd=%s pids=%v cpu=%q mem=%q pids.max=%q",
		r.UID, r.GID, r.CapEff, r.CapBnd, r.Pids, r.CPUQuota, r.MemoryLimit, r.PidsMax)
	checks := []struct {
		name      string
		got, want any
	}{
		{"uid", r.UID, NobodyID},
		{"gid", r.GID, NobodyID},
		{"effective capabilities", r.CapEff, "0000000000000000"},
		{"permitted capabilities", r.CapPrm, "0000000000000000"},
		{"bounding capabilities", r.CapBnd, "0000000000000000"},
		{"no_new_privs", r.NoNewPrivs, "1"},
		{"visible processes", r.Pids, []int{1}},
		{"hostname", r.Hostname, "atoll"},
		{"HOME", r.Home, "/home/atoll"},
		{"home writable", r.HomeWrite, ""},
		{"cwd", r.Cwd, "/home/atoll"},
		{"memory limit", r.MemoryLimit, strconv.FormatInt(64*machine.MiB, 10)},
		{"pids limit", r.PidsMax, "64"},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if q := r.CPUQuota; q != "10000 10000" {
		t.Errorf("CPU quota before Settle = %q, want 10000 per 10000 µs (one core to start)", q)
	}
	a.call("start-runner")
	if err := a.p.(scheduler.Settler).Settle(); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	a.callJSON("runner report", &r)
	if q := r.CPUQuota; q != "2500 10000" {
		t.Errorf("the function's CPU quota after Settle = %q, want 2500 per 10000 µs (0.25 CPU)", q)
	}
	a.callJSON("report", &r)
	if q := r.CPUQuota; q != "5000 10000" {
		t.Errorf("the agent's CPU quota after Settle = %q, want 5000 per 10000 µs (half a CPU)", q)
	}
	if !slices.Contains(r.Interfaces, "eth0") && len(r.Interfaces) < 2 {
		t.Errorf("host network expected by default; interfaces = %v", r.Interfaces)
	}

	// The agent exits when its stdin closes; the bundle, the runtime's
	// state and the cgroup go with the worker.
	a.p.Stdio().(*pipeConn).closeWrite()
	exit, err := a.wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if exit != (scheduler.Exit{Code: 0}) {
		t.Errorf("exit = %+v, want code 0", exit)
	}
	if _, err := os.Stat(filepath.Join(f.l.bundles, spec.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bundle still there: %v", err)
	}
	if f.l.containerExists(context.Background(), spec.ID) {
		t.Errorf("runtime still has the container")
	}
	cgPath, _, _ := f.l.cgroupPaths(spec.ID)
	if _, err := os.Stat(f.l.cg.MemoryDir(cgPath)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup still there: %v", err)
	}
}

func TestOCIFilesystemView(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	venv := filepath.Join(f.dataDir, "envs", "abc", "venv")
	if err := os.MkdirAll(venv, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(venv, "pyvenv.cfg"), []byte("home = /usr/bin\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	account := filepath.Join(f.dataDir, "accounts", "acme", "data")
	if err := os.MkdirAll(account, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(account, 0o777) // the storage package gives it to the worker's uid

	specA := helperSpec(t, workerID(t))
	specA.Machine = testXS
	specA.ReadOnlyPaths = []string{venv}
	specA.DataDir = account
	a := f.start(t, specA)
	specB := helperSpec(t, workerID(t))
	specB.Machine = testXS
	b := f.start(t, specB)

	stat := func(ag *agent, cmd string) statResult {
		t.Helper()
		var r statResult
		ag.callJSON(cmd, &r)
		return r
	}
	// Never visible: the server's data directory, the sandbox state. (The
	// directories on the way to a mounted venv exist, empty but for that
	// way: mounting at the same path needs them.)
	if f.l.runDir == "" {
		t.Errorf("the bundles are on disk: %s", f.l.bundles)
	}
	for _, p := range []string{f.secret, f.l.opts.StateDir, f.l.runDir, filepath.Join(f.l.bundles, specB.ID)} {
		if r := stat(a, "stat "+p); r.Exists {
			t.Errorf("worker sees %s", p)
		}
	}
	// The venv is visible read-only at its own path, nothing else of the
	// data directory is.
	if r := stat(a, "read "+filepath.Join(venv, "pyvenv.cfg")); r.Content != "home = /usr/bin\n" {
		t.Errorf("venv not visible: %+v", r)
	}
	if r := stat(a, "write "+filepath.Join(venv, "x")+" y"); r.Err == "" || !strings.Contains(r.Err, "read-only") {
		t.Errorf("venv writable: %+v", r)
	}
	if r := stat(a, "ls "+f.dataDir); r.Content != "envs" {
		t.Errorf("data directory seen as %+v, want only the way to the venv", r)
	}
	if r := stat(b, "stat "+f.dataDir); r.Exists {
		t.Errorf("worker B, which has no venv there, sees the data directory")
	}
	// System directories are read-only.
	if r := stat(a, "write /usr/atoll-probe x"); r.Err == "" {
		t.Errorf("/usr writable")
	}
	if r := stat(a, "stat /bin/sh"); !r.Exists {
		t.Errorf("/bin/sh missing: %+v", r)
	}
	// /data is the account's directory, read-write.
	if r := stat(a, "write /data/hello.txt hi"); r.Err != "" {
		t.Errorf("write /data: %v", r.Err)
	}
	if got, err := os.ReadFile(filepath.Join(account, "hello.txt")); err != nil || string(got) != "hi" {
		t.Errorf("host sees %q, %v in the account directory", got, err)
	}
	var r report
	a.callJSON("report", &r)
	if !slices.Contains(r.Env, "ATOLL_DATA_DIR=/data") {
		t.Errorf("ATOLL_DATA_DIR missing from %v", r.Env)
	}
	// /tmp is private to each worker.
	if r := stat(a, "write /tmp/mine secret-a"); r.Err != "" {
		t.Fatalf("write /tmp: %v", r.Err)
	}
	if r := stat(a, "read /tmp/mine"); r.Content != "secret-a" {
		t.Errorf("worker A cannot read its own /tmp: %+v", r)
	}
	if r := stat(b, "stat /tmp/mine"); r.Exists {
		t.Errorf("worker B sees worker A's /tmp file")
	}
	if _, err := os.Stat("/tmp/mine"); err == nil {
		t.Errorf("worker's /tmp file landed in the host's /tmp")
	}
}

func TestOCIRefusesToExposeProtectedPaths(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	tests := []struct {
		name   string
		mutate func(*HostSpec)
	}{
		{"data directory itself", func(s *HostSpec) { s.ReadOnlyPaths = []string{f.dataDir} }},
		{"its parent", func(s *HostSpec) { s.ReadOnlyPaths = []string{filepath.Dir(f.dataDir)} }},
		{"the state directory", func(s *HostSpec) { s.DataDir = f.l.opts.StateDir }},
		{"inside the state directory", func(s *HostSpec) { s.ReadOnlyPaths = []string{f.l.bundles} }},
		{"root", func(s *HostSpec) { s.ReadOnlyPaths = []string{"/"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := helperSpec(t, workerID(t))
			tt.mutate(&spec)
			p, err := f.l.Start(context.Background(), spec)
			if !errors.Is(err, ErrInvalidSpec) {
				if p != nil {
					p.Kill()
					p.Wait()
				}
				t.Fatalf("Start = %v, want ErrInvalidSpec", err)
			}
		})
	}
}

func TestOCINetworkNone(t *testing.T) {
	f := newOCIFixture(t, KindRunc, func(o *OCIOptions) { o.Network = "none" })
	spec := helperSpec(t, workerID(t))
	a := f.start(t, spec)
	var r report
	a.callJSON("report", &r)
	if !slices.Equal(r.Interfaces, []string{"lo"}) {
		t.Errorf("interfaces = %v, want only lo", r.Interfaces)
	}
}

func TestOCIOutOfMemory(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	spec := helperSpec(t, workerID(t))
	spec.Machine = testXS
	a := f.start(t, spec)
	fmt.Fprintln(a.in, "alloc 256")
	exit, err := a.wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if !exit.OOMKilled || exit.Signal != 9 {
		t.Errorf("exit = %+v, want OOMKilled by signal 9", exit)
	}
}

func TestOCIOutOfMemoryInChild(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	spec := helperSpec(t, workerID(t))
	spec.Machine = testXS
	a := f.start(t, spec)
	// The count Wait reads: the worker's memory cgroup's OOM kills.
	oomKills := func() int64 {
		t.Helper()
		n, ok := f.l.cg.OOMKills(a.p.(*ociProcess).memCgroup)
		if !ok {
			t.Skip("this kernel keeps no OOM kill count (before Linux 4.13)")
		}
		return n
	}
	if oomKills() != 0 {
		t.Fatal("OOM kills counted before anything ran")
	}
	if got := a.call("child-alloc 256"); got != "signal: killed" {
		t.Fatalf("child ended with %q, want signal: killed", got)
	}
	if got := a.call("echo still here"); got != "still here" {
		t.Fatalf("agent after its child's OOM: %q", got)
	}
	if oomKills() == 0 {
		t.Error("no OOM kill counted while running, after the child's OOM kill")
	}
	a.call("echo bye")
	fmt.Fprintln(a.in, "exit 0")
	exit, err := a.wait()
	if err != nil {
		t.Fatal(err)
	}
	if exit.Code != 0 || !exit.OOMKilled {
		t.Errorf("exit = %+v, want code 0 with OOMKilled", exit)
	}
}

func TestOCIPidsLimitStopsForkBomb(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	spec := helperSpec(t, workerID(t))
	spec.Machine = testXS
	spec.Machine.Pids = 32
	a := f.start(t, spec)
	fmt.Fprintln(a.in, `exec-sh i=0; while [ $i -lt 500 ]; do sleep 60 </dev/null >/dev/null 2>&1 & i=$((i+1)); echo $i; done; echo finished`)
	var last string
	for {
		line, err := a.out.ReadString('\n')
		if err != nil {
			break
		}
		last = strings.TrimSpace(line)
	}
	exit, err := a.wait()
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(last)
	t.Logf("the shell started %d processes before the pids limit stopped it; exit %+v", n, exit)
	if last == "finished" || n >= 32 || n == 0 {
		t.Errorf("last line %q: want the loop stopped below 32 processes", last)
	}
	if exit.Code == 0 {
		t.Errorf("exit = %+v, want the shell's fork failure", exit)
	}
	// The host is unharmed: a new worker starts and answers.
	next := f.start(t, helperSpec(t, workerID(t)))
	if got := next.call("echo ok"); got != "ok" {
		t.Errorf("next worker: %q", got)
	}
}

// hostCPUQuota reads the CPU quota and period of a worker's cpu cgroup,
// or of its child sub (see cgroups.Layout.SeparateAgent), from the host,
// as "QUOTA PERIOD".
func hostCPUQuota(t *testing.T, l *OCILauncher, id, sub string) string {
	t.Helper()
	dir := filepath.Join(hostCPUCgroup(l, id), sub)
	read := func(file string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatalf("read the worker's cpu cgroup: %v", err)
		}
		return strings.TrimSpace(string(data))
	}
	if l.cg.V2 {
		return read("cpu.max")
	}
	return read("cpu.cfs_quota_us") + " " + read("cpu.cfs_period_us")
}

func hostCPUCgroup(l *OCILauncher, id string) string {
	cgroupsPath, _, _ := l.cgroupPaths(id)
	return l.cg.CPUDir(cgroupsPath)
}

// TestOCISettleCPUQuota: Settle holds the function's processes to the
// type's quota and the agent to its own, in two cgroups inside the
// worker's, which is held to their sum.
func TestOCISettleCPUQuota(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	tests := []struct {
		name                             string
		cpus                             float64
		atStart, worker, function, agent string
	}{
		{"XS", 0.25, "10000 10000", "7500 10000", "2500 10000", "5000 10000"},
		{"S", 0.5, "10000 10000", "10000 10000", "5000 10000", "5000 10000"},
		{"M", 2, "20000 10000", "40000 10000", "20000 10000", "20000 10000"},
		{"tiny", 0.05, "20000 20000", "11000 20000", "1000 20000", "5000 10000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := helperSpec(t, workerID(t))
			spec.Machine = testXS
			spec.Machine.CPUs = tt.cpus
			a := f.start(t, spec)
			if got := hostCPUQuota(t, f.l, spec.ID, ""); got != tt.atStart {
				t.Errorf("quota before Settle = %q, want %q", got, tt.atStart)
			}
			a.call("start-runner")
			if err := a.p.(scheduler.Settler).Settle(); err != nil {
				t.Fatalf("Settle: %v", err)
			}
			for _, c := range []struct{ sub, want string }{{"", tt.worker}, {cgroups.FunctionCgroup, tt.function}, {cgroups.AgentCgroup, tt.agent}} {
				if got := hostCPUQuota(t, f.l, spec.ID, c.sub); got != c.want {
					t.Errorf("quota of %q after Settle = %q, want %q", c.sub, got, c.want)
				}
			}
			dir := hostCPUCgroup(f.l, spec.ID)
			procs := func(sub string) []int {
				t.Helper()
				pids, err := ocgroups.GetPids(filepath.Join(dir, sub))
				if err != nil {
					t.Fatal(err)
				}
				return pids
			}
			if got, want := procs(cgroups.AgentCgroup), []int{a.p.(*ociProcess).initPID}; !slices.Equal(got, want) {
				t.Errorf("the agent's cgroup holds %v, want the container's init %v", got, want)
			}
			if got := procs(cgroups.FunctionCgroup); len(got) != 1 {
				t.Errorf("the function's cgroup holds %v, want the runner alone", got)
			}
			if got := procs(""); len(got) != 0 {
				t.Errorf("the worker's own cgroup still holds %v", got)
			}
			if got := a.call("echo still here"); got != "still here" {
				t.Errorf("agent after Settle: %q", got)
			}
			if got := a.call("runner echo runner here"); got != "runner here" {
				t.Errorf("runner after Settle: %q", got)
			}
		})
	}
}

func TestOCISettleAfterExit(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	tests := []struct {
		name string
		cpus float64
		end  func(a *agent)
	}{
		{"XS killed", 0.25, func(a *agent) { a.p.Kill() }},
		{"XS exited", 0.25, func(a *agent) { fmt.Fprintln(a.in, "exit 3") }},
		{"M killed", 2, func(a *agent) { a.p.Kill() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := helperSpec(t, workerID(t))
			spec.Machine = testXS
			spec.Machine.CPUs = tt.cpus
			a := f.start(t, spec)
			tt.end(a)
			if _, err := a.wait(); err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if err := a.p.(scheduler.Settler).Settle(); !errors.Is(err, ErrNotRunning) {
				t.Errorf("Settle after exit = %v, want ErrNotRunning", err)
			}
		})
	}
}

// TestOCISettleGoneCgroup: the container may exit, and its cgroup go,
// before the runtime process has been reaped.
func TestOCISettleGoneCgroup(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v2=%v", v2), func(t *testing.T) {
			p := &ociProcess{
				l:         &OCILauncher{cg: cgroups.Layout{V2: v2, CPURoot: t.TempDir()}},
				id:        "w1",
				cpuCgroup: filepath.Join(t.TempDir(), "gone"),
				typeCPU:   cgroups.CPUShare{Quota: 2500, Period: 10000},
				boosted:   true,
				done:      make(chan struct{}), // running, as far as Settle knows
			}
			if err := p.Settle(); !errors.Is(err, ErrNotRunning) {
				t.Errorf("Settle on a removed cgroup = %v, want ErrNotRunning", err)
			}
		})
	}
}

func TestOCICPUQuotaHolds(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	spec := helperSpec(t, workerID(t))
	spec.Machine = testXS
	a := f.start(t, spec)
	a.call("start-runner")
	if err := a.p.(scheduler.Settler).Settle(); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	spin := func(cmd string) float64 {
		t.Helper()
		ratio, err := strconv.ParseFloat(a.call(cmd), 64)
		if err != nil {
			t.Fatal(err)
		}
		return ratio
	}
	function := spin("runner spin 1500")
	t.Logf("a CPU-bound loop in XS used %.2f CPU", function)
	if function > 0.35 {
		t.Errorf("CPU use %.2f, want about 0.25", function)
	}
	// The agent's cgroup is held to half a core, not to the function's
	// quarter. Below 0.3 with its cgroup throttled, its quota would be
	// wrong; below 0.3 without, other work on the host had the CPUs.
	throttled := func() uint64 {
		t.Helper()
		n, err := fscommon.GetValueByKey(filepath.Join(hostCPUCgroup(f.l, spec.ID), cgroups.AgentCgroup), "cpu.stat", "nr_throttled")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := throttled()
	agent := spin("spin 1500")
	periods := throttled() - before
	t.Logf("the agent spinning used %.2f CPU, throttled in %d periods", agent, periods)
	switch {
	case agent > 0.6:
		t.Errorf("the agent's CPU use %.2f, want at most 0.5", agent)
	case agent < 0.3 && periods > 0:
		t.Errorf("the agent's CPU use %.2f while throttled, want about 0.5", agent)
	}
}

func TestOCIKillThenWait(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	spec := helperSpec(t, workerID(t))
	spec.Machine = testXS
	a := f.start(t, spec)
	a.call("spawn-sleep") // a grandchild must go too
	if a.p.(*ociProcess).init == nil {
		t.Error("no pidfd on the container's init: Kill must start a runtime process")
	}
	start := time.Now()
	if err := a.p.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	exit, err := a.wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Kill+Wait took %s", d)
	} else {
		t.Logf("Kill+Wait took %s", d)
	}
	if exit != (scheduler.Exit{Code: -1, Signal: 9}) {
		t.Errorf("exit = %+v, want signal 9, not OOM", exit)
	}
	if err := a.p.Kill(); err != nil {
		t.Errorf("Kill after Wait: %v", err)
	}
	if entries, _ := os.ReadDir(f.l.bundles); len(entries) != 0 {
		t.Errorf("bundles left: %v", entries)
	}
}

func TestOCIStartFailureReportsRuntimeError(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	spec := helperSpec(t, workerID(t))
	spec.ReadOnlyPaths = []string{"/nonexistent/python"}
	_, err := f.l.Start(context.Background(), spec)
	if !errors.Is(err, ErrStartFailed) || !strings.Contains(err.Error(), "/nonexistent/python") {
		t.Fatalf("Start = %v, want ErrStartFailed naming the missing path", err)
	}
	if entries, _ := os.ReadDir(f.l.bundles); len(entries) != 0 {
		t.Errorf("bundles left: %v", entries)
	}
}

func TestOCIRemoveStale(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	spec := helperSpec(t, workerID(t))
	a := f.start(t, spec)
	a.call("echo up")
	// A new server on the same state directory finds the worker the old
	// one left behind.
	l2 := removeStaleWith(t, f.l.opts)
	if l2.containerExists(context.Background(), spec.ID) {
		t.Error("container survived RemoveStale")
	}
	if _, err := os.Stat(filepath.Join(f.l.bundles, spec.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bundle survived RemoveStale: %v", err)
	}
	waitEnded(t, a)
}

// removeStaleWith is a new server's launcher on opts, after its RemoveStale.
func removeStaleWith(t *testing.T, opts OCIOptions) *OCILauncher {
	t.Helper()
	l, err := NewOCI(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveStale(context.Background()); err != nil {
		t.Fatalf("RemoveStale: %v", err)
	}
	return l
}

// waitEnded waits for the worker a stale-removal killed to be seen ended.
func waitEnded(t *testing.T, a *agent) {
	t.Helper()
	done := make(chan struct{})
	go func() { a.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the killed worker's Wait did not return")
	}
}

// A server of an earlier version kept bundles and the runtime's state in
// the state directory; one of this version still finds what it left there.
func TestOCIRemoveStaleFindsWhatAnOlderServerLeftOnDisk(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	if f.l.runDir == "" {
		t.Fatal("the bundles are on disk already")
	}
	older := f.l.onDisk()
	for _, d := range []string{older.bundles, older.rt.Root} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	current := f.l
	f.l = older
	spec := helperSpec(t, workerID(t))
	a := f.start(t, spec)
	f.l = current
	a.call("echo up")

	removeStaleWith(t, f.l.opts)
	waitEnded(t, a)
	// (The worker's own teardown, which no older server would still run,
	// asks the runtime too, and the runtime makes its root again.)
	if older.containerExists(context.Background(), spec.ID) {
		t.Error("the older server's container survived RemoveStale")
	}
	if _, err := os.Stat(older.bundles); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s survived RemoveStale: %v", older.bundles, err)
	}
	if left, _ := os.ReadDir(older.rt.Root); len(left) != 0 {
		t.Errorf("the runtime's state survived RemoveStale: %v", left)
	}
}

func TestOCICrun(t *testing.T) {
	f := newOCIFixture(t, KindCrun, nil)
	spec := helperSpec(t, workerID(t))
	spec.Machine = testXS
	a := f.start(t, spec)
	if got := a.call("echo hi"); got != "hi" {
		t.Fatalf("echo = %q", got)
	}
	fmt.Fprintln(a.in, "alloc 256")
	exit, err := a.wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("crun OOM exit: %+v", exit)
	if exit.Signal != 9 {
		t.Errorf("exit = %+v, want signal 9", exit)
	}
}

// TestColdStart measures the time from Start to the first reply byte of
// a trivial agent, per launcher, and logs the median.
func TestColdStart(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	const runs = 15
	measure := func(t *testing.T, l HostLauncher, m machine.Type) time.Duration {
		var times []time.Duration
		for range runs {
			spec := helperSpec(t, workerID(t))
			spec.Machine = m
			start := time.Now()
			p, err := l.Start(context.Background(), spec)
			if err != nil {
				t.Fatal(err)
			}
			a := newAgent(t, p)
			if got := a.call("echo x"); got != "x" {
				t.Fatalf("echo = %q", got)
			}
			// As the scheduler does once the agent is ready.
			if s, ok := p.(scheduler.Settler); ok {
				if err := s.Settle(); err != nil {
					t.Fatalf("Settle: %v", err)
				}
			}
			times = append(times, time.Since(start))
			a.p.Kill()
			a.wait()
		}
		slices.Sort(times)
		return times[len(times)/2]
	}
	t.Run("process", func(t *testing.T) {
		p50 := measure(t, NewProcess(ProcessOptions{}), testXS)
		t.Logf("cold start p50 process: %s", p50.Round(100*time.Microsecond))
	})
	for _, kind := range []string{KindRunc, KindCrun} {
		for _, m := range []machine.Type{{Name: "unlimited"}, testXS} {
			t.Run(kind+"/"+m.Name, func(t *testing.T) {
				f := newOCIFixture(t, kind, nil)
				p50 := measure(t, f.l, m)
				t.Logf("cold start p50 %s (%s): %s", kind, m.Name, p50.Round(100*time.Microsecond))
			})
		}
	}
}

func TestOCICheck(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	if err := f.l.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if entries, _ := os.ReadDir(f.l.bundles); len(entries) != 0 {
		t.Errorf("bundles left: %v", entries)
	}
}

func TestNewOCIRefuses(t *testing.T) {
	requireRuntime(t, KindRunc)
	tests := []struct {
		name string
		opts OCIOptions
		want error
	}{
		{"no state directory", OCIOptions{}, nil},
		{"unknown runtime", OCIOptions{Runtime: "docker", StateDir: t.TempDir()}, nil},
		{"missing runtime", OCIOptions{RuntimePath: "/nonexistent/runc", StateDir: t.TempDir()}, ErrRuntimeNotFound},
		{"bad network", OCIOptions{StateDir: t.TempDir(), Network: "bridge"}, nil},
		{"state under a system directory", OCIOptions{StateDir: "/etc/atoll"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewOCI(tt.opts)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("NewOCI = %v, want an error (%v)", err, tt.want)
			}
		})
	}
}

// TestOCIDetachedLeavesNoRuntimeProcess: under runc the runtime exits once
// the container runs; its init is this process's own child, with the
// worker's pipes themselves as stdin and stdout (no runtime relaying
// frames), and its exit status is the worker's.
func TestOCIDetachedLeavesNoRuntimeProcess(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	if !f.l.detach {
		t.Fatal("runc containers run in the runtime's foreground on this host")
	}
	spec := helperSpec(t, workerID(t))
	spec.Machine = testXS
	a := f.start(t, spec)
	p := a.p.(*ociProcess)
	if got := a.call("echo detached"); got != "detached" {
		t.Fatalf("echo = %q", got)
	}
	if p.runtimePID != 0 {
		t.Errorf("a runtime process (pid %d) runs beside the worker", p.runtimePID)
	}
	pid, _, err := adoptInit(filepath.Join(p.bundle, "pid"))
	if err != nil {
		t.Fatalf("the container's init: %v", err)
	}
	if ppid, _ := parentOf(pid); ppid != os.Getpid() {
		t.Errorf("the container's init has parent %d, want this process (%d)", ppid, os.Getpid())
	}
	// The init's stdin is the very pipe the launcher writes to.
	in, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", pid))
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(p.pipes.conn.w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("pipe:[%d]", st.Ino); in != want {
		t.Errorf("the init's stdin is %s, want the launcher's pipe %s", in, want)
	}
	if _, err := fmt.Fprintln(a.in, "exit 7"); err != nil {
		t.Fatal(err)
	}
	exit, err := a.wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if exit != (scheduler.Exit{Code: 7}) {
		t.Errorf("exit = %+v, want code 7", exit)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the init (pid %d) is left, a zombie not reaped: %v", pid, err)
	}
}

// TestOCIRuncRunsFromASealedCopy: runc starts from a copy of itself that
// nothing can change (so it makes none of its own at each start), and
// containers run from it.
func TestOCIRuncRunsFromASealedCopy(t *testing.T) {
	f := newOCIFixture(t, KindRunc, nil)
	if f.l.sealed == nil {
		t.Fatal("runc runs from its path")
	}
	seals, err := unix.FcntlInt(f.l.sealed.Fd(), unix.F_GET_SEALS, 0)
	if err != nil || seals != runcSeals {
		t.Fatalf("seals = %#x, %v; want %#x", seals, err, runcSeals)
	}
	if _, err := f.l.sealed.WriteAt([]byte{0}, 0); err == nil {
		t.Error("the sealed copy can be written")
	}
	spec := helperSpec(t, workerID(t))
	a := f.start(t, spec)
	if got := a.call("echo sealed"); got != "sealed" {
		t.Fatalf("echo = %q", got)
	}
}
