package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/sandbox/cgroups"
	"github.com/atoll-dev/atoll/internal/scheduler"
)

// Sandbox kinds, as configuration names them.
const (
	KindRunc    = "runc"
	KindCrun    = "crun"
	KindRunsc   = "runsc"
	KindProcess = "process"
)

// NobodyID is the default user and group of a worker (nobody/nogroup).
const NobodyID = 65534

// OCIOptions configures NewOCI.
type OCIOptions struct {
	// Runtime is KindRunc (the default), KindCrun or KindRunsc.
	Runtime string
	// RuntimePath is the runtime binary; default: Runtime looked up in PATH.
	RuntimePath string
	// StateDir holds the bundles and the runtime's state, one directory
	// per worker (for example <data-dir>/sandbox). Required. It is never
	// visible to workers, nor is anything a mount would expose it through.
	StateDir string
	// Protected are further host paths no worker may see (the server's
	// data directory, keys). Mounting one of them, or a directory that
	// contains one, is refused; mounting a directory inside one (a venv
	// under the data directory) is allowed.
	Protected []string
	// UID and GID run the user's code (the runner); 0 means NobodyID.
	UID, GID uint32
	// AgentUID and AgentGID run the agent; 0 means AgentID. They must
	// differ from UID (see splitUsers). The container starts as uid 0
	// with CAP_SETUID, CAP_SETGID and CAP_SETPCAP alone, for the agent to
	// start the runner as UID before it drops to AgentUID; user code never
	// runs as root.
	AgentUID, AgentGID uint32
	// Network is NetworkHost (the default), NetworkNone (a private network
	// namespace with loopback only) or NetworkIsolated (a namespace of the
	// worker's own with outbound access through NetworkStack, where
	// NetworkDeny, link-local addresses and the host's own are unreachable).
	Network string
	// NetworkStack is StackSlirp4netns (the default) or StackPasta;
	// NetworkStackPath its binary (default: looked up in PATH).
	NetworkStack, NetworkStackPath string
	// NetworkDeny are the IPv4 prefixes isolated workers cannot reach
	// besides those always denied (DefaultDeny is the server's default).
	NetworkDeny []netip.Prefix
	// CgroupParent is the cgroup under which each worker's cgroup is made;
	// default "/atoll".
	CgroupParent string
	// Stderr receives the agents' standard error and the runtime's own
	// error messages, as they come: for tests and tools. It must be safe
	// for concurrent use. When nil (what a server wants), the agent's
	// records are logged through Logger with the worker and its account,
	// bounded, and nothing else written there is (see agentLog).
	Stderr io.Writer
	// Logger receives the launcher's diagnostics. Default: discard.
	Logger *slog.Logger
}

// runtimeProfile is what differs between OCI runtimes.
type runtimeProfile struct {
	// keep: "run --keep" leaves the stopped container, cgroup included,
	// until "delete", so its OOM counter can be read after exit. Runtimes
	// without it remove the cgroup as the container exits.
	keep bool
	// sealedCopy: the runtime runs from a sealed copy of its binary made
	// once (see sealedCopy), rather than copying itself at every start.
	sealedCopy bool
	// detach: "run --detach" hands the container's init the worker's pipes
	// themselves and exits once the container runs; the server adopts the
	// init (see adoptOrphans). In the foreground, runc relays the container's
	// stdio through pipes of its own (a copy of every frame, each way) and
	// stays resident beside every worker. runsc keeps the foreground: its
	// container's processes run in its own kernel, not as host children.
	detach bool
	// globalArgs come before the subcommand, after --root.
	globalArgs func(o OCIOptions) []string
	// seccomp adapts the default profile to what the runtime makes of it.
	seccomp func(*specs.LinuxSeccomp)
	// agentCgroup: the container's processes are host processes, which
	// Settle can move into cgroups of their own (see Settle).
	agentCgroup bool
}

var profiles = map[string]runtimeProfile{
	KindRunc: {keep: true, detach: true, sealedCopy: true, agentCgroup: true},
	KindCrun: {agentCgroup: true},
	KindRunsc: {globalArgs: func(o OCIOptions) []string {
		// runsc has its own network stack; "host" passes the host's through.
		// It applies the spec's seccomp filter inside its own kernel only
		// when told to: with it, a worker gets the same system calls
		// (and no user namespaces) under runsc as under runc.
		return []string{"--network=" + o.Network, "--oci-seccomp"}
	}, seccomp: seccompForGVisor},
}

// OCILauncher runs each worker in a container of an OCI runtime, from a
// bundle generated per worker under StateDir.
type OCILauncher struct {
	opts       OCIOptions
	rt         *runc.Runc // the runtime's command line: runc, crun and runsc share it
	profile    runtimeProfile
	cg         cgroups.Layout
	systemDirs []systemDir
	bundles    string       // <run>/bundles/<id>: config.json and rootfs
	runDir     string       // the in-memory directory holding bundles and the runtime's state, if any (see memoryRunDir)
	net        *isolatedNet // NetworkIsolated only
	resolvConf []byte       // NetworkIsolated: the workers' /etc/resolv.conf, if it can be mounted
	tag        string       // tells this launcher's cgroups from another server's
	sealed     *os.File     // the runtime's sealed copy it runs from, if any; open as long as the launcher
	detach     bool         // containers run detached, their inits adopted (profile.detach, where it works here)
}

// NewOCI checks the host and the runtime and prepares StateDir.
func NewOCI(opts OCIOptions) (*OCILauncher, error) {
	if opts.Runtime == "" {
		opts.Runtime = KindRunc
	}
	profile, ok := profiles[opts.Runtime]
	if !ok {
		return nil, fmt.Errorf("oci sandbox: unknown runtime %q (want runc, crun or runsc)", opts.Runtime)
	}
	cg, err := cgroups.Detect()
	if err != nil {
		return nil, fmt.Errorf("oci sandbox: %w", err)
	}
	path := opts.RuntimePath
	if path == "" {
		path = opts.Runtime
	}
	runtimePath, err := exec.LookPath(path)
	if err != nil {
		return nil, fmt.Errorf("oci sandbox: %w: %s (install the %s package)", ErrRuntimeNotFound, path, opts.Runtime)
	}
	if opts.StateDir == "" {
		return nil, errors.New("oci sandbox: no state directory")
	}
	if opts.StateDir, err = filepath.Abs(opts.StateDir); err != nil {
		return nil, fmt.Errorf("oci sandbox: %w", err)
	}
	if err := absPaths(opts.Protected); err != nil {
		return nil, fmt.Errorf("oci sandbox: %w", err)
	}
	if opts.UID == 0 {
		opts.UID = NobodyID
	}
	if opts.GID == 0 {
		opts.GID = NobodyID
	}
	var isolated *isolatedNet
	if opts.AgentUID == 0 {
		opts.AgentUID = AgentID
	}
	if opts.AgentGID == 0 {
		opts.AgentGID = AgentID
	}
	if opts.AgentUID == opts.UID {
		return nil, fmt.Errorf("oci sandbox: the agent's uid %d must differ from the runner's", opts.AgentUID)
	}
	switch opts.Network {
	case "":
		opts.Network = NetworkHost
	case NetworkHost, NetworkNone:
	case NetworkIsolated:
		if opts.Runtime == KindRunsc {
			return nil, fmt.Errorf("oci sandbox: %w: --network %s is not available with runsc (it has a network stack of its own); use host or none", ErrNetworkUnavailable, NetworkIsolated)
		}
		if isolated, err = newIsolatedNet(opts.NetworkStack, opts.NetworkStackPath, opts.NetworkDeny); err != nil {
			return nil, fmt.Errorf("oci sandbox: %w", err)
		}
	default:
		return nil, fmt.Errorf("oci sandbox: network %q: want %s, %s or %s", opts.Network, NetworkIsolated, NetworkHost, NetworkNone)
	}
	if opts.CgroupParent == "" {
		opts.CgroupParent = "/atoll"
	}
	opts.CgroupParent = filepath.Clean("/" + opts.CgroupParent)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dirs, err := hostSystemDirs()
	if err != nil {
		return nil, fmt.Errorf("oci sandbox: %w", err)
	}
	for _, p := range append([]string{opts.StateDir}, opts.Protected...) {
		if d := systemDirOf(p, dirs); d != "" {
			return nil, fmt.Errorf("oci sandbox: %s lies under %s, which every worker sees", p, d)
		}
	}
	// What lives only as long as the containers, in memory where it can.
	run := opts.StateDir
	dir, err := memoryRunDir(opts.StateDir)
	if err == nil {
		if d := systemDirOf(dir, dirs); d != "" {
			os.Remove(dir)
			err = fmt.Errorf("%s lies under %s, which every worker sees", dir, d)
		}
	}
	if err != nil {
		opts.Logger.Debug("worker bundles are kept in the state directory", slog.Any("reason", err))
	} else {
		run = dir
	}
	root := filepath.Join(run, "runtime") // the runtime's own state
	l := &OCILauncher{
		opts: opts,
		rt: &runc.Runc{
			Command: runtimePath,
			Root:    root,
			// So that a terminal's Ctrl-C reaches the server only, which
			// then tears workers down.
			Setpgid: true,
		},
		profile:    profile,
		cg:         cg,
		systemDirs: dirs,
		bundles:    filepath.Join(run, "bundles"),
		net:        isolated,
	}
	if run != opts.StateDir {
		l.runDir = run
	}
	if isolated != nil {
		if host, ok := hostResolvConf(); ok {
			l.resolvConf = resolvConfContent(host)
		} else {
			opts.Logger.Warn("/etc/resolv.conf is not a regular file: isolated workers keep the host's resolver configuration, which may name resolvers they cannot reach")
		}
	}
	if profile.globalArgs != nil {
		l.rt.ExtraArgs = profile.globalArgs(opts)
	}
	if profile.sealedCopy {
		if f, exe, err := sealedCopy(runtimePath); err != nil {
			opts.Logger.Debug("the runtime copies its binary at every start", slog.Any("reason", err))
		} else {
			l.sealed, l.rt.Command = f, exe
		}
	}
	if profile.detach {
		if err := adoptOrphans(); err != nil {
			opts.Logger.Debug("containers run in the runtime's foreground", slog.Any("reason", err))
		} else {
			l.detach = true
		}
	}
	sum := sha256.Sum256([]byte(opts.StateDir))
	l.tag = hex.EncodeToString(sum[:4])
	for _, d := range []string{opts.StateDir, l.bundles, root} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			l.Close()
			return nil, fmt.Errorf("oci sandbox: %w", err)
		}
	}
	return l, nil
}

// systemDirOf returns the system directory every worker sees that p lies
// under, or "".
func systemDirOf(p string, dirs []systemDir) string {
	for _, d := range dirs {
		if isUnder(p, d.path) {
			return d.path
		}
	}
	return ""
}

// hostSystemDirs finds which system directories this host has, and which
// are symlinks (merged /usr).
func hostSystemDirs() ([]systemDir, error) {
	var dirs []systemDir
	for _, p := range systemDirCandidates {
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			return nil, err
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return nil, err
			}
			dirs = append(dirs, systemDir{path: p, linkTo: target})
		case fi.IsDir():
			dirs = append(dirs, systemDir{path: p})
		}
	}
	return dirs, nil
}

// cgroupPaths returns the worker's cgroupsPath and the directory (relative
// to the hierarchy) whose memory OOM counter covers it after it exits.
func (l *OCILauncher) cgroupPaths(id string) (cgroupsPath, counted string, ownParent bool) {
	leaf := l.opts.CgroupParent + "/" + l.tag + "-" + id
	if l.profile.keep || !l.cg.V2 {
		return leaf, leaf, false
	}
	// The runtime deletes the container's cgroup as it exits; on cgroup v2
	// memory.events counts descendants too, so a parent made for the
	// worker keeps the count until it is removed after exit.
	return leaf + "/w", leaf, true
}

// runtimeDo runs a short runtime subcommand, bounded in time; its error
// carries the runtime's own message (go-runc adds its output).
func (l *OCILauncher) runtimeDo(ctx context.Context, sub string, do func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, runtimeCmdTimeout)
	defer cancel()
	if err := do(ctx); err != nil {
		return fmt.Errorf("%s %s: %w", l.opts.Runtime, sub, err)
	}
	return nil
}

// containerExists asks the runtime whether it still has container id.
func (l *OCILauncher) containerExists(ctx context.Context, id string) bool {
	return l.runtimeDo(ctx, "state", func(ctx context.Context) error {
		_, err := l.rt.State(ctx, id)
		return err
	}) == nil
}

const (
	runtimeCmdTimeout = 30 * time.Second
	// startTimeout bounds the wait for a container to run when the
	// caller's context has no deadline.
	startTimeout = time.Minute
	// killRetry is how long Kill keeps asking the runtime before ending
	// the runtime process itself.
	killRetry = 2 * time.Second
)

// Start writes the worker's bundle and runs it in the foreground of a
// runtime process whose stdin and stdout are the worker's Conn. It returns
// once the container runs, or with the runtime's error (wrapping
// ErrStartFailed) if it never does. A type of less than one CPU starts
// with one; the Process's Settle lowers its quota to the type's.
func (l *OCILauncher) Start(ctx context.Context, w HostSpec) (HostProcess, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validID(w.ID); err != nil {
		return nil, fmt.Errorf("start worker %s: %w", w.ID, err)
	}
	cgroupsPath, counted, ownParent := l.cgroupPaths(w.ID)
	bundle := filepath.Join(l.bundles, w.ID)
	if err := os.Mkdir(bundle, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("start worker %s: %w: a worker with this ID exists", w.ID, ErrInvalidSpec)
		}
		return nil, fmt.Errorf("start worker %s: %w", w.ID, err)
	}
	p := &ociProcess{
		l:         l,
		id:        w.ID,
		account:   w.Account,
		bundle:    bundle,
		memCgroup: l.cg.MemoryDir(counted),
		cpuCgroup: l.cg.CPUDir(cgroupsPath),
		done:      make(chan struct{}),
	}
	if m := w.Machine; m.CPUs > 0 {
		period := cpuPeriodFor(m.CPUs)
		p.typeCPU = cgroups.CPUShare{Quota: cpuQuota(m.CPUs, period), Period: period}
		p.agentCPU = cgroups.CPUShare{Quota: cpuQuota(agentCPUs(m), cpuPeriod), Period: cpuPeriod}
		p.boosted = startCPUs(m) != m.CPUs
	}
	if ownParent {
		p.removeCgroup = p.memCgroup
	}
	in := specInputs{
		uid:         l.opts.UID,
		gid:         l.opts.GID,
		agentUID:    l.opts.AgentUID,
		agentGID:    l.opts.AgentGID,
		networkNone: l.opts.Network == NetworkNone,
		cgroupsPath: cgroupsPath,
		swapLimit:   l.cg.SwapLimit(),
		systemDirs:  l.systemDirs,
		stateDir:    l.opts.StateDir,
		runDir:      l.runDir,
		protected:   l.opts.Protected,
		gpuDevice:   statDevice,
	}
	began := time.Now()
	if err := l.startNetwork(p, &in); err != nil {
		p.cleanup()
		return nil, fmt.Errorf("start worker %s: %w", w.ID, err)
	}
	networked := time.Now()
	spec, err := buildSpec(w, in)
	if err != nil {
		p.cleanup()
		return nil, fmt.Errorf("start worker %s: %w", w.ID, err)
	}
	if l.profile.seccomp != nil {
		l.profile.seccomp(spec.Linux.Seccomp)
	}
	if err := l.writeBundle(bundle, spec); err != nil {
		p.cleanup()
		return nil, fmt.Errorf("start worker %s: %w", w.ID, err)
	}
	written := time.Now()
	if err := p.run(ctx); err != nil {
		return nil, fmt.Errorf("start worker %s: %w", w.ID, err)
	}
	ran := time.Now()
	if p.net != nil {
		// The stack configured the interface while the container started;
		// no call runs before it is done.
		if err := p.net.waitReady(ctx); err != nil {
			p.Kill()
			p.Wait()
			return nil, fmt.Errorf("start worker %s: %w", w.ID, err)
		}
	}
	l.opts.Logger.Debug("worker container started", "worker", w.ID, "network", networked.Sub(began).Round(10*time.Microsecond),
		"bundle", written.Sub(networked).Round(10*time.Microsecond), "runtime", ran.Sub(written).Round(10*time.Microsecond),
		"network_ready", time.Since(ran).Round(10*time.Microsecond))
	return p, nil
}

// startNetwork gives an isolated worker its namespace and stack, and its
// resolver configuration in the bundle.
func (l *OCILauncher) startNetwork(p *ociProcess, in *specInputs) error {
	if l.net == nil {
		return nil
	}
	wn, err := l.net.start(p.bundle)
	if err != nil {
		return err
	}
	p.net = wn
	in.netnsPath = wn.path()
	if l.resolvConf != nil {
		path := filepath.Join(p.bundle, "resolv.conf")
		if err := os.WriteFile(path, l.resolvConf, 0o644); err != nil {
			return err
		}
		in.resolvConf = path
	}
	return nil
}

func (l *OCILauncher) writeBundle(bundle string, spec *specs.Spec) error {
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	for _, d := range l.systemDirs {
		if d.linkTo != "" {
			if err := os.Symlink(d.linkTo, filepath.Join(rootfs, d.path)); err != nil {
				return err
			}
		}
	}
	data, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
}

// Close removes the in-memory directory of bundles and the runtime's state
// once nothing is left in it: a server that ends with containers it could
// not remove leaves their state there for the next one's RemoveStale. The
// launcher starts nothing after Close.
func (l *OCILauncher) Close() error {
	if l.runDir == "" {
		return nil
	}
	for _, d := range []string{l.bundles, l.rt.Root, l.runDir} {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("oci sandbox: %w", err)
		}
	}
	return nil
}

// Check runs a trivial container with small limits and reports why it
// failed, if it did: the runtime can be installed and the server root and
// still be unable to run containers (inside an unprivileged container, for
// one). A server calls it once after NewOCI and falls back to processes,
// with a warning, when it fails.
func (l *OCILauncher) Check(ctx context.Context) (err error) {
	if l.detach {
		defer func() {
			if err != nil {
				// The server falls back to plain processes: their orphans
				// are the host init's to reap.
				stopAdopting()
			}
		}()
	}
	truePath, err := exec.LookPath("true")
	if err != nil {
		return fmt.Errorf("oci sandbox check: %w", err)
	}
	if truePath, err = filepath.Abs(truePath); err != nil {
		return fmt.Errorf("oci sandbox check: %w", err)
	}
	var buf [4]byte
	rand.Read(buf[:])
	p, err := l.Start(ctx, HostSpec{
		ID: "check-" + hex.EncodeToString(buf[:]),
		// Limits a trivial process fits in, and runsc's own sandbox too
		// (its kernel and file proxy count about 40 threads in the pids
		// cgroup, and 64 MiB of memory).
		Machine: machine.Type{Name: "check", CPUs: 0.1, MemoryBytes: 128 * machine.MiB, Pids: 128},
		Args:    []string{truePath},
	})
	if err != nil {
		return fmt.Errorf("oci sandbox check: %w", err)
	}
	p.Stdio().Close()
	exit, err := p.Wait()
	if err != nil {
		return fmt.Errorf("oci sandbox check: %w", err)
	}
	if exit.Code != 0 {
		return fmt.Errorf("oci sandbox check: %w: %s in a container exited with %+v", ErrStartFailed, truePath, exit)
	}
	return nil
}

// RemoveStale deletes containers and bundles left by an earlier server
// that did not tear its workers down (a crash); call it once at startup,
// before any Start.
func (l *OCILauncher) RemoveStale(ctx context.Context) error {
	err := l.removeStale(ctx)
	if l.runDir == "" {
		return err
	}
	// A server of an earlier version kept them in the state directory.
	disk := l.onDisk()
	if _, statErr := os.Stat(disk.bundles); statErr != nil {
		return err
	}
	if diskErr := disk.removeStale(ctx); diskErr != nil {
		return errors.Join(err, diskErr)
	}
	return errors.Join(err, os.Remove(disk.bundles), os.RemoveAll(disk.rt.Root))
}

// onDisk is l as it was before bundles and the runtime's state moved into
// memory: both in the state directory.
func (l *OCILauncher) onDisk() *OCILauncher {
	disk, rt := *l, *l.rt
	rt.Root = filepath.Join(l.opts.StateDir, "runtime")
	disk.rt, disk.bundles, disk.runDir = &rt, filepath.Join(l.opts.StateDir, "bundles"), ""
	return &disk
}

// removeStale removes the containers and bundles under l.bundles.
func (l *OCILauncher) removeStale(ctx context.Context) error {
	entries, err := os.ReadDir(l.bundles)
	if err != nil {
		return fmt.Errorf("remove stale workers: %w", err)
	}
	var errs []error
	for _, e := range entries {
		id := e.Name()
		if l.containerRuns(ctx, id) {
			// Workers die with the server that started them: one still
			// running means that did not work, and it is killed now.
			l.opts.Logger.Warn("killing a worker an earlier server left running", slog.String("worker", id))
		} else {
			l.opts.Logger.Info("removing what an earlier server's worker left", slog.String("worker", id))
		}
		p := &ociProcess{l: l, id: id, bundle: filepath.Join(l.bundles, id)}
		if _, counted, own := l.cgroupPaths(id); own {
			p.removeCgroup = l.cg.MemoryDir(counted)
		}
		if err := p.deleteContainer(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := p.cleanup(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

var _ scheduler.Settler = (*ociProcess)(nil)

// ociProcess is one running container.
type ociProcess struct {
	l            *OCILauncher
	id           string
	account      string
	bundle       string
	memCgroup    string           // host path of the cgroup whose OOM count is the worker's
	cpuCgroup    string           // host path of the container's cpu cgroup
	removeCgroup string           // a cgroup made for the worker, removed at teardown
	typeCPU      cgroups.CPUShare // the type's CPU quota; zero where it has no CPU limit
	agentCPU     cgroups.CPUShare // the agent's, in a cgroup of its own (see Settle)
	boosted      bool             // it started with more CPU than typeCPU (see startCPUs)
	initPID      int              // the container's init (the agent), once it runs; 0 if unknown
	net          *workerNet       // NetworkIsolated: the worker's namespace and stack

	runtimePID int      // the runtime process running the container in its foreground; 0 when detached
	init       *os.File // pidfd of the container's init, when it could be had
	pipes      *stdioPipes
	stderr     *stderrPump
	done       chan struct{} // closed when the container (detached) or the runtime process has exited
	ended      scheduler.Exit
	runErr     error // why the runtime failed, once done is closed
	killed     atomic.Bool

	teardown sync.Once
	exit     scheduler.Exit
	err      error
}

// run starts the runtime and waits until the container runs.
//
// One runtime process does it all ("run", not "create" and "start": a
// second runtime process costs more than the first's extra work). Where
// the launcher detaches, that process exits once the container runs, and
// the container's init, which inherited the worker's pipes themselves,
// is the server's child from then on (see runDetached). Otherwise it runs
// the container in its foreground (see runForeground).
func (p *ociProcess) run(ctx context.Context) (err error) {
	pipes, err := newStdioPipes()
	if err != nil {
		p.cleanup()
		return err
	}
	pump, err := startStderrPump(p.l.opts.Stderr, p.l.opts.Logger, p.id, p.account)
	if err != nil {
		pipes.closeAll()
		p.cleanup()
		return err
	}
	p.pipes, p.stderr = pipes, pump
	pidFile := filepath.Join(p.bundle, "pid")
	if p.l.detach {
		return p.runDetached(ctx, pidFile)
	}
	return p.runForeground(ctx, pidFile)
}

// runDetached runs the container with "run --detach": the runtime exits
// once the container's process runs, and its init, orphaned, is reparented
// to the server (a child subreaper, see adoptOrphans), which waits for it
// and learns the worker's exit status first hand. No runtime process
// stays: the agent reads and writes the server's pipes directly.
func (p *ociProcess) runDetached(ctx context.Context, pidFile string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	opts := &runc.CreateOpts{
		IO:      runtimeIO{stdin: p.pipes.childIn, stdout: p.pipes.childOut, stderr: p.stderr.w},
		PidFile: pidFile,
		Detach:  true,
	}
	// A detached container stays, cgroup included, until "delete": no
	// runtime process is left to remove it at exit (so no --keep).
	status, err := p.l.rt.Run(ctx, p.id, p.bundle, opts)
	p.pipes.closeChild()
	p.stderr.w.Close()
	var pid int
	if err == nil {
		pid, p.init, err = adoptInit(pidFile)
		p.initPID = pid
	}
	if err != nil {
		// Whatever the runtime made is deleted (forcibly: that kills a
		// container it left running, and anything of it left).
		p.ended = runtimeExit(status)
		close(p.done)
		p.Wait()
		p.pipes.conn.Close()
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for the container to run: %w", ctx.Err())
		}
		return fmt.Errorf("%w: %s run: %w: %s", ErrStartFailed, p.l.opts.Runtime, err, p.stderr.Tail())
	}
	go func() {
		p.ended = waitChild(pid)
		close(p.done)
	}()
	return nil
}

// runForeground runs the container in the runtime's foreground: the
// runtime process stays the parent of the container's init, so its exit
// status is the worker's; it returns once the runtime has written the pid
// file, which it does once the container's process runs.
func (p *ociProcess) runForeground(ctx context.Context, pidFile string) (err error) {
	pipes, pump := p.pipes, p.stderr
	watch, err := watchPidFile(pidFile)
	if err != nil {
		pipes.closeAll()
		pump.w.Close()
		pump.finish(0)
		p.cleanup()
		return err
	}
	defer watch.Close()
	started := make(chan int, 1) // the runtime's pid; closed without one if it never started
	opts := &runc.CreateOpts{
		IO:      runtimeIO{stdin: pipes.childIn, stdout: pipes.childOut, stderr: pump.w},
		PidFile: pidFile,
		Started: started,
	}
	if p.l.profile.keep {
		opts.ExtraArgs = []string{"--keep"}
	}
	go func() {
		// Not ctx: ctx bounds the start, not the worker's life.
		var status int
		status, p.runErr = p.l.rt.Run(context.Background(), p.id, p.bundle, opts)
		p.ended = runtimeExit(status)
		close(p.done)
	}()
	pid, ok := <-started
	pipes.closeChild()
	pump.w.Close()
	if !ok { // the runtime never started
		<-p.done
		pipes.conn.Close()
		pump.finish(0)
		p.cleanup()
		return p.runErr
	}
	p.runtimePID = pid

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	defer func() {
		if err == nil {
			p.initPID, p.init = openInit(pidFile, p.runtimePID)
		}
	}()
	for !watch.written() {
		select {
		case <-p.done:
			if watch.written() {
				return nil // it ran and ended already; Wait tells how
			}
			p.Wait()
			pipes.conn.Close()
			return fmt.Errorf("%w: %s exited with %+v: %s", ErrStartFailed, p.l.opts.Runtime, p.exit, p.stderr.Tail())
		case <-ctx.Done():
			p.Kill()
			p.Wait()
			pipes.conn.Close()
			return fmt.Errorf("waiting for the container to run: %w", ctx.Err())
		case _, ok := <-watch.changed:
			if !ok { // the watch failed: nothing would wake this loop
				p.Kill()
				p.Wait()
				pipes.conn.Close()
				return fmt.Errorf("%w: the watch on the runtime's pid file ended", ErrStartFailed)
			}
		}
	}
	return nil
}

// runtimeIO gives the runtime process the worker's pipes as its stdio,
// which the container's process inherits: the agent speaks its protocol on
// them. The parent ends stay with the ociProcess, so go-runc is handed
// none.
type runtimeIO struct{ stdin, stdout, stderr *os.File }

func (runtimeIO) Close() error          { return nil }
func (runtimeIO) Stdin() io.WriteCloser { return nil }
func (runtimeIO) Stdout() io.ReadCloser { return nil }
func (runtimeIO) Stderr() io.ReadCloser { return nil }
func (r runtimeIO) Set(cmd *exec.Cmd) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r.stdin, r.stdout, r.stderr
}

// openInit opens a pidfd on the container's init, named by the runtime's
// pid file, if it is the runtime process's child (as runc's is); else Kill
// asks the runtime.
func openInit(pidFile string, runtimePID int) (int, *os.File) {
	pid, err := readPidFile(pidFile)
	if err != nil {
		return 0, nil
	}
	return pid, openChild(pid, runtimePID)
}

func (p *ociProcess) Stdio() io.ReadWriteCloser { return p.pipes.conn }

// Kill ends the container's processes (all of them: killing the PID
// namespace's init kills the namespace). It signals the init through its
// pidfd where it has one: a "runtime kill" process costs about 10 ms, on
// the way of every worker torn down.
func (p *ociProcess) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	p.killed.Store(true)
	if p.init != nil && killPidfd(p.init) == nil {
		return nil
	}
	deadline := time.Now().Add(killRetry)
	var lastErr error
	for time.Now().Before(deadline) {
		lastErr = p.l.runtimeDo(context.Background(), "kill", func(ctx context.Context) error {
			return p.l.rt.Kill(ctx, p.id, int(syscall.SIGKILL), nil)
		})
		if lastErr == nil {
			return nil
		}
		// The container may have just exited; or the runtime is still
		// setting it up.
		select {
		case <-p.done:
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The runtime cannot reach the container: end the runtime process;
	// Wait's forced delete removes whatever is left.
	if p.runtimePID == 0 {
		return lastErr // detached: no runtime process to end
	}
	p.l.opts.Logger.Warn("runtime could not kill worker; killing the runtime", slog.String("worker", p.id), slog.Any("error", lastErr))
	rp, err := os.FindProcess(p.runtimePID)
	if err == nil {
		err = rp.Kill()
	}
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return errors.Join(lastErr, err)
	}
	return nil
}

// Settle holds the worker to its machine type's CPU quota, before its
// first call; the scheduler calls it once the agent is ready. The worker
// started with at least one core (see startCPUs), so that starting, which
// is atoll's overhead, is not throttled.
//
// Where the container's processes are host processes (runc, crun), the
// agent gets a cpu cgroup of its own (agentCPUs) and the function's
// processes, the Python runner and all it starts, one held to the type's
// quota: relaying calls, output and values is atoll's overhead too, and
// counted against a small type's quota it made the function wait (an XS
// worker in a loop of trivial calls was throttled in nine of ten periods,
// its agent taking 130 µs of each call). The runner is the only process
// the agent starts, before it reports ready, so every process started
// later is the function's. Elsewhere (runsc, whose processes run in its
// own kernel) Settle lowers the container's quota to the type's.
//
// It writes cgroup files itself: a "runtime update" process would cost
// more than the boost saves. On a worker that has exited it returns an
// error wrapping ErrNotRunning.
func (p *ociProcess) Settle() error {
	select {
	case <-p.done:
		return fmt.Errorf("settle worker %s: %w", p.id, ErrNotRunning)
	default:
	}
	var err error
	switch {
	case p.typeCPU.Quota == 0:
		return nil
	case p.l.profile.agentCgroup && p.initPID > 0:
		err = p.l.cg.SeparateAgent(p.cpuCgroup, p.initPID, p.typeCPU, p.agentCPU)
	case p.boosted:
		err = p.l.cg.SetCPUQuota(p.cpuCgroup, p.typeCPU.Quota, p.typeCPU.Period)
	default:
		return nil
	}
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		// The container exited and its cgroup or its agent went with it.
		return fmt.Errorf("settle worker %s: %w: %w", p.id, ErrNotRunning, err)
	}
	return fmt.Errorf("settle worker %s: set cpu quota: %w", p.id, err)
}

// Wait waits for the container to exit, reads whether it was killed for
// memory, then deletes the container, its cgroup and its bundle.
func (p *ociProcess) Wait() (scheduler.Exit, error) {
	<-p.done
	p.teardown.Do(func() {
		p.exit = p.ended
		// Before delete: deleting removes the cgroup and its counters.
		if n, ok := p.l.cg.OOMKills(p.memCgroup); ok {
			p.exit.OOMKilled = n > 0
		} else {
			// Kernels before 4.13 keep no OOM kill count on cgroup v1:
			// a SIGKILL nobody sent, in a cgroup that hit its limit.
			p.exit.OOMKilled = p.exit.Signal == 9 && !p.killed.Load() && p.l.cg.LimitHit(p.memCgroup)
		}
		if p.init != nil {
			p.init.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), runtimeCmdTimeout)
		defer cancel()
		err := p.deleteContainer(ctx)
		p.stderr.finish(time.Second)
		p.pipes.conn.closeWrite()
		p.err = errors.Join(err, p.cleanup())
	})
	return p.exit, p.err
}

// deleteContainer removes the runtime's container, if it still has one.
func (p *ociProcess) deleteContainer(ctx context.Context) error {
	err := p.l.runtimeDo(ctx, "delete", func(ctx context.Context) error {
		return p.l.rt.Delete(ctx, p.id, &runc.DeleteOpts{Force: true})
	})
	if err == nil {
		return nil
	}
	if !p.l.containerExists(ctx, p.id) {
		return nil // the runtime removed it at exit
	}
	return fmt.Errorf("delete worker %s: %w", p.id, err)
}

// cleanup removes what Start made on the host besides the container.
func (p *ociProcess) cleanup() error {
	var errs []error
	if p.net != nil {
		if err := p.net.close(); err != nil {
			errs = append(errs, fmt.Errorf("worker %s network: %w", p.id, err))
		}
		p.net = nil
	}
	if p.removeCgroup != "" {
		if err := cgroups.Remove(p.removeCgroup); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeBundle(p.bundle); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeBundle deletes a bundle directory, unless something is still
// mounted inside it (then deleting could reach into a host directory).
func removeBundle(dir string) error {
	mounted, err := mountsUnder(dir)
	if err != nil {
		return fmt.Errorf("remove bundle %s: %w", dir, err)
	}
	if len(mounted) > 0 {
		return fmt.Errorf("remove bundle %s: still mounted: %s", dir, strings.Join(mounted, ", "))
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove bundle: %w", err)
	}
	return nil
}

// runtimeExit maps the runtime's exit status. The runtime exits with the
// container process's code, or 128+N when signal N ended it; codes above
// 128 are read as signals, as a shell does. go-runc gives -1 for a runtime
// that a signal ended itself, without saying which: the only one atoll
// sends it is SIGKILL (Kill's last resort).
func runtimeExit(status int) scheduler.Exit {
	switch {
	case status < 0:
		return scheduler.Exit{Code: -1, Signal: int(syscall.SIGKILL)}
	case status > 128 && status <= 128+64:
		return scheduler.Exit{Code: -1, Signal: status - 128}
	}
	return scheduler.Exit{Code: status}
}
