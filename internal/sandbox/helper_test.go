//go:build unix

package sandbox

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/atoll-dev/atoll/internal/scheduler"
)

// helperEnv makes the test binary act as a worker agent (helper process
// pattern): it answers line commands on stdin with one line on stdout.
const helperEnv = "ATOLL_SANDBOX_TEST_HELPER"

func TestMain(m *testing.M) {
	switch mode := os.Getenv(helperEnv); {
	case mode == "agent":
		if err := becomeRunner(os.Args); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(3)
		}
		os.Exit(helperAgent(os.Stdin, os.Stdout))
	case mode == "runner":
		os.Exit(helperAgent(os.Stdin, os.Stdout))
	case strings.HasPrefix(mode, "alloc:"):
		mib, _ := strconv.Atoi(strings.TrimPrefix(mode, "alloc:"))
		allocate(mib)
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// report is what the helper tells about the world it sees.
type report struct {
	UID, GID    int
	CapEff      string
	CapBnd      string
	CapPrm      string
	NoNewPrivs  string
	Pids        []int
	Hostname    string
	Home        string
	HomeWrite   string // error writing a file in HOME, or ""
	Cwd         string
	Env         []string
	CPUQuota    string // v1 cpu.cfs_quota_us/cpu.cfs_period_us or v2 cpu.max
	MemoryLimit string
	PidsMax     string
	Interfaces  []string
}

// statResult answers "stat", "read" and "write".
type statResult struct {
	Exists  bool
	Content string
	Err     string
}

func helperAgent(in io.Reader, out io.Writer) int {
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	var runner *helperRunner
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "start-runner":
			// Like the agent's Python runner: a child started before the
			// worker is ready, which answers "runner ..." commands.
			r, err := startHelperRunner()
			if err != nil {
				fmt.Fprintln(out, "error:", err)
				continue
			}
			runner = r
			fmt.Fprintln(out, r.cmd.Process.Pid)
		case "runner":
			if runner == nil {
				fmt.Fprintln(out, "error: no runner")
				continue
			}
			fmt.Fprintln(out, runner.call(arg))
		case "echo":
			fmt.Fprintln(out, arg)
		case "report":
			enc.Encode(makeReport())
		case "stat":
			_, err := os.Stat(arg)
			enc.Encode(statResult{Exists: err == nil, Err: errString(err)})
		case "read":
			data, err := os.ReadFile(arg)
			enc.Encode(statResult{Exists: err == nil, Content: string(data), Err: errString(err)})
		case "ls":
			entries, err := os.ReadDir(arg)
			names := make([]string, 0, len(entries))
			for _, e := range entries {
				names = append(names, e.Name())
			}
			enc.Encode(statResult{Exists: err == nil, Content: strings.Join(names, " "), Err: errString(err)})
		case "write":
			path, content, _ := strings.Cut(arg, " ")
			err := os.WriteFile(path, []byte(content), 0o644)
			enc.Encode(statResult{Exists: err == nil, Err: errString(err)})
		case "alloc":
			mib, _ := strconv.Atoi(arg)
			allocate(mib)
			fmt.Fprintln(out, "survived")
		case "child-alloc":
			// Like the agent's Python runner: a child dies of OOM, the
			// agent lives on and reports it.
			exe, _ := os.Executable()
			c := exec.Command(exe)
			c.Env = append(os.Environ(), helperEnv+"=alloc:"+arg)
			fmt.Fprintln(out, errString(c.Run()))
		case "spin":
			ms, _ := strconv.Atoi(arg)
			fmt.Fprintf(out, "%.3f\n", spin(time.Duration(ms)*time.Millisecond))
		case "spawn-sleep":
			c := exec.Command("/bin/sleep", "300")
			if err := c.Start(); err != nil {
				fmt.Fprintln(out, "error:", err)
				continue
			}
			fmt.Fprintln(out, c.Process.Pid)
		case "exec-sh":
			// Replace the agent with a shell (no Go runtime to trip over
			// the pids limit while the shell hits it).
			err := syscall.Exec("/bin/sh", []string{"sh", "-c", arg}, os.Environ())
			fmt.Fprintln(out, "exec:", err)
		case "dial":
			// "dial tcp 127.0.0.1:80", "dial udp 169.254.169.254:80" (a UDP
			// connect only picks a route: nothing is sent), "dial unix @name".
			network, addr, _ := strings.Cut(arg, " ")
			c, err := net.DialTimeout(network, addr, 2*time.Second)
			if err == nil {
				c.Close()
			}
			fmt.Fprintln(out, "dial:", errString(err))
		case "listen-abstract":
			l, err := net.Listen("unix", arg)
			if err == nil {
				go func() {
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						c.Close()
					}
				}()
			}
			fmt.Fprintln(out, "listen:", errString(err))
		case "exit":
			code, _ := strconv.Atoi(arg)
			return code
		default:
			fmt.Fprintln(out, "unknown command", cmd)
		}
	}
	return 0
}

// helperRunner is a child of the helper that answers the same commands.
type helperRunner struct {
	cmd *exec.Cmd
	in  io.Writer
	out *bufio.Reader
}

func startHelperRunner() (*helperRunner, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := exec.Command(exe)
	c.Env = append(os.Environ(), helperEnv+"=runner")
	in, err := c.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := c.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	return &helperRunner{cmd: c, in: in, out: bufio.NewReader(out)}, nil
}

// call sends the runner one command and returns its one-line answer.
func (r *helperRunner) call(line string) string {
	if _, err := fmt.Fprintln(r.in, line); err != nil {
		return "error: " + err.Error()
	}
	answer, err := r.out.ReadString('\n')
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(answer)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

var (
	sink     []byte
	spinSink int
)

func allocate(mib int) {
	b := make([]byte, mib<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	sink = b
}

// spin burns CPU for wall time d and returns CPU time over wall time.
func spin(d time.Duration) float64 {
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	start := time.Now()
	x := 0
	for time.Since(start) < d {
		for i := 0; i < 10000; i++ {
			x += i
		}
	}
	spinSink = x
	wall := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	return cpu.Seconds() / wall.Seconds()
}

func makeReport() report {
	r := report{UID: os.Getuid(), GID: os.Getgid(), Home: os.Getenv("HOME"), Env: os.Environ()}
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "CapEff":
				r.CapEff = v
			case "CapBnd":
				r.CapBnd = v
			case "CapPrm":
				r.CapPrm = v
			case "NoNewPrivs":
				r.NoNewPrivs = v
			}
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			r.Pids = append(r.Pids, pid)
		}
	}
	r.Hostname, _ = os.Hostname()
	r.Cwd, _ = os.Getwd()
	if r.Home != "" { // else the probe would land in the package directory
		r.HomeWrite = errString(os.WriteFile(filepath.Join(r.Home, "probe"), []byte("x"), 0o600))
	}
	if dir, v2 := ownCPUCgroup(); v2 {
		r.CPUQuota = firstFile(filepath.Join(dir, "cpu.max"))
	} else if dir != "" {
		r.CPUQuota = firstFile(filepath.Join(dir, "cpu.cfs_quota_us")) + " " + firstFile(filepath.Join(dir, "cpu.cfs_period_us"))
	}
	r.MemoryLimit = firstFile("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
	r.PidsMax = firstFile("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max")
	if data, err := os.ReadFile("/proc/net/dev"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if name, _, ok := strings.Cut(line, ":"); ok && !strings.Contains(name, "|") {
				r.Interfaces = append(r.Interfaces, strings.TrimSpace(name))
			}
		}
	}
	return r
}

func firstFile(paths ...string) string {
	for _, p := range paths {
		if data, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(data))
		}
	}
	return ""
}

// ---- test side ----

// helperSpec is a worker spec whose agent is this test binary.
func helperSpec(t *testing.T, id string) HostSpec {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return HostSpec{
		ID:   id,
		Args: []string{exe},
		Env:  []string{helperEnv + "=agent", "GOMAXPROCS=2"},
	}
}

// agent drives a started helper.
type agent struct {
	t    *testing.T
	p    HostProcess
	in   io.Writer
	out  *bufio.Reader
	once sync.Once
	exit scheduler.Exit
	err  error
}

func newAgent(t *testing.T, p HostProcess) *agent {
	a := &agent{t: t, p: p, in: p.Stdio(), out: bufio.NewReader(p.Stdio())}
	t.Cleanup(func() {
		p.Kill()
		a.wait()
		p.Stdio().Close()
	})
	return a
}

func (a *agent) wait() (scheduler.Exit, error) {
	a.once.Do(func() { a.exit, a.err = a.p.Wait() })
	return a.exit, a.err
}

// call sends one command and returns the reply line (with a deadline, so a
// dead agent fails the test instead of hanging it).
func (a *agent) call(cmd string) string {
	a.t.Helper()
	if _, err := fmt.Fprintln(a.in, cmd); err != nil {
		a.t.Fatalf("send %q: %v", cmd, err)
	}
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := a.out.ReadString('\n')
		ch <- result{strings.TrimSuffix(line, "\n"), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			a.t.Fatalf("reply to %q: %v (got %q)", cmd, r.err, r.line)
		}
		return r.line
	case <-time.After(30 * time.Second):
		a.p.Kill()
		<-ch
		a.t.Fatalf("no reply to %q in 30s", cmd)
		return ""
	}
}

func (a *agent) callJSON(cmd string, v any) {
	a.t.Helper()
	line := a.call(cmd)
	if err := json.Unmarshal([]byte(line), v); err != nil {
		a.t.Fatalf("reply to %q: %v: %q", cmd, err, line)
	}
}

// syncBuffer collects stderr from several workers.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
