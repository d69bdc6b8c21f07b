package sandbox

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/atoll-dev/atoll/internal/envbuild"
)

// BuildUserID is the default user and group of builds: a user of their
// own, neither root nor the workers' nobody. The files builds write (the
// shared uv cache, whose files venvs link) are then not a worker's to
// write, even through a mount that would let it.
const BuildUserID = NobodyID - 1

// BuildOptions configures NewBuildSandbox.
type BuildOptions struct {
	// Runtime is KindRunc (the default) or KindCrun; RuntimePath its
	// binary (default: looked up in PATH).
	Runtime     string
	RuntimePath string
	// StateDir holds the build containers' bundles and the runtime's state
	// (for example <data-dir>/build-sandbox). Required; never visible to
	// a build.
	StateDir string
	// Protected are host paths no build may see, nor a directory holding
	// one (the server's data directory); directories inside one (the
	// environment being built) may be mounted.
	Protected []string
	// UID and GID run the builds; 0 means BuildUserID. Root is never used.
	UID, GID uint32
	// InitPath is the atoll binary, which each build container runs as
	// `atoll build-init` (BuildInit). Required, absolute.
	InitPath string
	// CgroupParent is the cgroup under which each build's is made;
	// default "/atoll-builds".
	CgroupParent string
	// Pids bounds the processes of one build; default 4096.
	Pids int64
	// Logger receives the sandbox's diagnostics. Default: discard.
	Logger *slog.Logger
}

// BuildSandbox runs environment builds (uv and the build backends it
// starts) in containers of an OCI runtime: unprivileged user, no
// capabilities, no_new_privs, buildSeccompProfile, own PID, mount, IPC and
// UTS namespaces, the host's network (builds reach the package index),
// the host's system directories read-only and, of the rest of the host,
// only what the build's envbuild.BuildView names. It implements
// envbuild.Sandbox.
type BuildSandbox struct {
	opts       BuildOptions
	rt         *runc.Runc
	systemDirs []systemDir
	bundles    string
	tag        string
}

var _ envbuild.Sandbox = (*BuildSandbox)(nil)

// NewBuildSandbox checks the runtime and prepares StateDir.
func NewBuildSandbox(opts BuildOptions) (*BuildSandbox, error) {
	if opts.Runtime == "" {
		opts.Runtime = KindRunc
	}
	if opts.Runtime != KindRunc && opts.Runtime != KindCrun {
		return nil, fmt.Errorf("build sandbox: runtime %q: want runc or crun", opts.Runtime)
	}
	path := opts.RuntimePath
	if path == "" {
		path = opts.Runtime
	}
	runtimePath, err := exec.LookPath(path)
	if err != nil {
		return nil, fmt.Errorf("build sandbox: %w: %s (install the %s package)", ErrRuntimeNotFound, path, opts.Runtime)
	}
	if opts.StateDir == "" || !filepath.IsAbs(opts.InitPath) {
		return nil, errors.New("build sandbox: StateDir and an absolute InitPath are required")
	}
	if opts.StateDir, err = filepath.Abs(opts.StateDir); err != nil {
		return nil, fmt.Errorf("build sandbox: %w", err)
	}
	if err := absPaths(opts.Protected); err != nil {
		return nil, fmt.Errorf("build sandbox: %w", err)
	}
	if opts.UID == 0 {
		opts.UID = BuildUserID
	}
	if opts.GID == 0 {
		opts.GID = BuildUserID
	}
	if opts.CgroupParent == "" {
		opts.CgroupParent = "/atoll-builds"
	}
	opts.CgroupParent = filepath.Clean("/" + opts.CgroupParent)
	if opts.Pids == 0 {
		opts.Pids = 4096
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dirs, err := hostSystemDirs()
	if err != nil {
		return nil, fmt.Errorf("build sandbox: %w", err)
	}
	sum := sha256.Sum256([]byte(opts.StateDir))
	s := &BuildSandbox{
		opts: opts,
		rt: &runc.Runc{
			Command: runtimePath,
			Root:    filepath.Join(opts.StateDir, "runtime"),
			Setpgid: true,
			// The runtime dies with the server; the container dies with
			// its lifeline (see BuildInit).
			PdeathSignal: syscall.SIGKILL,
		},
		systemDirs: dirs,
		bundles:    filepath.Join(opts.StateDir, "bundles"),
		tag:        hex.EncodeToString(sum[:4]),
	}
	for _, d := range []string{opts.StateDir, s.bundles, s.rt.Root} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("build sandbox: %w", err)
		}
	}
	return s, nil
}

// RemoveStale deletes the stopped build containers and the bundles an
// earlier process left (it was killed: its builds died with it, their
// runtime state did not). Builds of a live process sharing StateDir (an
// `atoll envs build` beside the server) are left alone.
func (s *BuildSandbox) RemoveStale(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, runtimeCmdTimeout)
	defer cancel()
	live := map[string]bool{}
	cs, err := s.rt.List(ctx)
	if err != nil {
		return fmt.Errorf("remove stale builds: %w", err)
	}
	var errs []error
	for _, c := range cs {
		if c.Status == "running" || c.Status == "created" {
			live[c.ID] = true
			continue
		}
		if err := s.rt.Delete(ctx, c.ID, &runc.DeleteOpts{Force: true}); err != nil {
			errs = append(errs, err)
		}
	}
	entries, err := os.ReadDir(s.bundles)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, e := range entries {
		if !live[e.Name()] {
			if err := removeBundle(filepath.Join(s.bundles, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Open starts a build container for v and returns its session.
func (s *BuildSandbox) Open(ctx context.Context, v envbuild.BuildView) (envbuild.BuildSession, error) {
	opened := time.Now()
	id := "b-" + s.tag + "-" + v.ID
	if err := validID(id); err != nil {
		return nil, err
	}
	if err := s.own(v); err != nil {
		return nil, fmt.Errorf("build sandbox: %w", err)
	}
	spec, err := s.spec(id, v)
	if err != nil {
		return nil, fmt.Errorf("build sandbox: %w", err)
	}
	bundle := filepath.Join(s.bundles, id)
	if err := os.Mkdir(bundle, 0o700); err != nil {
		return nil, fmt.Errorf("build sandbox: %w", err)
	}
	if err := s.writeBundle(bundle, spec); err != nil {
		removeBundle(bundle)
		return nil, fmt.Errorf("build sandbox: %w", err)
	}
	prepared := time.Now()
	sess, err := s.start(id, bundle)
	if err != nil {
		removeBundle(bundle)
		return nil, fmt.Errorf("build sandbox: %w", err)
	}
	s.opts.Logger.Debug("build container started", "build", id, "prepare", prepared.Sub(opened).Round(10*time.Microsecond), "start", time.Since(prepared).Round(10*time.Microsecond))
	return sess, nil
}

// own gives the build's user the directories it is to write.
func (s *BuildSandbox) own(v envbuild.BuildView) error {
	uid, gid := int(s.opts.UID), int(s.opts.GID)
	for _, d := range v.Owned {
		fi, err := os.Lstat(d)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok && int(st.Uid) == uid && int(st.Gid) == gid {
			continue
		}
		if !slices.Contains(v.Recursive, d) {
			if err := os.Lchown(d, uid, gid); err != nil {
				return err
			}
			continue
		}
		s.opts.Logger.Info("giving the build user a directory", "path", d, "uid", uid)
		err = filepath.WalkDir(d, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, uid, gid)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// spec is the runtime spec of one build container.
func (s *BuildSandbox) spec(id string, v envbuild.BuildView) (*specs.Spec, error) {
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
	}
	var covered []string
	for _, d := range s.systemDirs {
		covered = append(covered, d.path)
		if d.linkTo == "" {
			mounts = append(mounts, roBind(d.path))
		}
	}
	in := specInputs{stateDir: s.opts.StateDir, protected: s.opts.Protected}
	type bind struct {
		path string
		rw   bool
	}
	var binds []bind
	for _, p := range v.Writable {
		binds = append(binds, bind{filepath.Clean(p), true})
	}
	for _, p := range append([]string{s.opts.InitPath}, v.ReadOnly...) {
		binds = append(binds, bind{filepath.Clean(p), false})
	}
	// Parents before children, so a child is skipped as covered.
	slices.SortStableFunc(binds, func(a, b bind) int { return len(a.path) - len(b.path) })
	for _, b := range binds {
		if !filepath.IsAbs(b.path) || b.path == "/" {
			return nil, fmt.Errorf("%w: build path %q must be absolute, and not /", ErrInvalidSpec, b.path)
		}
		if isUnderAny(b.path, covered) {
			continue
		}
		if isUnderAny(b.path, []string{"/proc", "/dev", "/sys"}) || b.path == "/tmp" {
			return nil, fmt.Errorf("%w: build path %s would hide part of the sandbox", ErrInvalidSpec, b.path)
		}
		if err := checkExposure(b.path, in); err != nil {
			return nil, err
		}
		m := roBind(b.path)
		if b.rw {
			m.Options = []string{"rbind", "rw", "nosuid", "nodev"}
		}
		mounts = append(mounts, m)
		covered = append(covered, b.path)
	}
	for _, h := range v.Hidden {
		// An empty read-only directory in place of the hidden one.
		mounts = append(mounts, specs.Mount{Destination: filepath.Clean(h), Type: "tmpfs", Source: "tmpfs",
			Options: []string{"ro", "nosuid", "nodev", "noexec", "size=4k", "mode=555"}})
	}

	pids := s.opts.Pids
	umask := uint32(0o022)
	oomScoreAdj := 500
	noCaps := &specs.LinuxCapabilities{
		Bounding: []string{}, Effective: []string{}, Inheritable: []string{},
		Permitted: []string{}, Ambient: []string{},
	}
	env := slices.Clone(v.Env)
	env = setEnv(env, "HOME", "/tmp")
	// Local repositories a build may clone (allowed git+file: requirements)
	// belong to the server's user, not the build's; git refuses those
	// unless a global configuration says they are safe, which everything
	// the build sees may be.
	env = setEnv(env, "GIT_CONFIG_GLOBAL", "/"+buildGitConfig)
	if !hasEnv(env, "PATH") {
		env = append(env, "PATH="+defaultPath)
	}
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			// Workers run as another user: what a build writes must be
			// readable by all.
			User:            specs.User{UID: s.opts.UID, GID: s.opts.GID, Umask: &umask},
			Args:            []string{s.opts.InitPath, "build-init"},
			Env:             env,
			Cwd:             "/",
			Capabilities:    noCaps,
			NoNewPrivileges: true,
			OOMScoreAdj:     &oomScoreAdj,
		},
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Hostname: "atoll-build",
		Mounts:   mounts,
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace},
				{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
			},
			CgroupsPath: s.opts.CgroupParent + "/" + id,
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				Pids:    &specs.LinuxPids{Limit: &pids},
			},
			Seccomp:       buildSeccompProfile(),
			MaskedPaths:   maskedPaths(),
			ReadonlyPaths: readonlyPaths(),
		},
	}, nil
}

func (s *BuildSandbox) writeBundle(bundle string, spec *specs.Spec) error {
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	for _, d := range s.systemDirs {
		if d.linkTo != "" {
			if err := os.Symlink(d.linkTo, filepath.Join(rootfs, d.path)); err != nil {
				return err
			}
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, buildGitConfig), []byte("[safe]\n\tdirectory = *\n"), 0o644); err != nil {
		return err
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
}

// buildGitConfig is git's global configuration in a build container's
// root.
const buildGitConfig = "gitconfig"

// buildIO gives the runtime process the session's pipes as its stdio,
// which the container's init inherits.
type buildIO struct {
	stdin, stdout *os.File
	stderr        io.Writer
}

func (buildIO) Close() error          { return nil }
func (buildIO) Stdin() io.WriteCloser { return nil }
func (buildIO) Stdout() io.ReadCloser { return nil }
func (buildIO) Stderr() io.ReadCloser { return nil }
func (b buildIO) Set(cmd *exec.Cmd) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = b.stdin, b.stdout, b.stderr
}

// start runs the container in the foreground of a runtime process.
func (s *BuildSandbox) start(id, bundle string) (*buildSession, error) {
	pipes, err := newStdioPipes()
	if err != nil {
		return nil, err
	}
	inR, inW, outR, outW := pipes.childIn, pipes.conn.w, pipes.conn.r, pipes.childOut
	sess := &buildSession{s: s, id: id, bundle: bundle, lifeline: inW, outFile: outR, out: bufio.NewReaderSize(outR, 64*1024), done: make(chan struct{})}
	started := make(chan int, 1)
	go func() {
		// Not a request's ctx: the container lives until Close.
		sess.status, sess.runErr = s.rt.Run(context.Background(), id, bundle, &runc.CreateOpts{
			IO:      buildIO{stdin: inR, stdout: outW, stderr: &sess.stderr},
			Started: started,
		})
		close(sess.done)
	}()
	_, ok := <-started
	inR.Close()
	outW.Close()
	if !ok {
		<-sess.done
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("%w: %s run: %v: %s", ErrStartFailed, s.opts.Runtime, sess.runErr, sess.stderr.String())
	}
	return sess, nil
}

// buildSession is one build container and the server's ends of its pipes.
type buildSession struct {
	s        *BuildSandbox
	id       string
	bundle   string
	lifeline *os.File // the container's stdin: requests; closing it ends the container
	outFile  *os.File
	out      *bufio.Reader // records from BuildInit
	stderr   tailBuffer    // the runtime's and BuildInit's own messages

	done   chan struct{}
	status int
	runErr error

	mu        sync.Mutex
	ended     bool // the lifeline is closed
	closeOnce sync.Once
	closeErr  error
}

// end closes the lifeline: the container and everything in it dies.
func (b *buildSession) end() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.ended {
		b.ended = true
		b.lifeline.Close()
	}
}

func (b *buildSession) Run(ctx context.Context, dir string, argv []string, out func(string)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	req, err := json.Marshal(buildRequest{Dir: dir, Args: argv})
	if err != nil {
		return err
	}
	b.mu.Lock()
	if b.ended {
		b.mu.Unlock()
		return errors.New("build sandbox: session has ended")
	}
	_, err = b.lifeline.Write(append(req, '\n'))
	b.mu.Unlock()
	if err != nil {
		return fmt.Errorf("build sandbox: send step: %w: %s", err, b.stderr.String())
	}
	stop := context.AfterFunc(ctx, b.end)
	defer stop()
	for {
		line, err := b.readLine()
		if err != nil {
			b.end()
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("build sandbox: the build container ended: %w: %s", err, b.stderr.String())
		}
		kind, text := line[:min(2, len(line))], line[min(2, len(line)):]
		switch kind {
		case recOutput:
			out(text)
		case recExit:
			code, err := strconv.Atoi(text)
			if err != nil {
				b.end()
				return fmt.Errorf("build sandbox: bad exit record %q", line)
			}
			if code != 0 {
				return &envbuild.ExitError{Code: code}
			}
			return nil
		case recError:
			return fmt.Errorf("build sandbox: step %s did not start: %s", argv[0], text)
		default:
			b.end()
			return fmt.Errorf("build sandbox: bad record %q", line)
		}
	}
}

// readLine reads one record; an overlong one is cut at the buffer's size
// and the rest dropped.
func (b *buildSession) readLine() (string, error) {
	line, isPrefix, err := b.out.ReadLine()
	if err != nil {
		return "", err
	}
	s := string(line)
	for isPrefix {
		if _, isPrefix, err = b.out.ReadLine(); err != nil {
			return "", err
		}
	}
	return s, nil
}

// Close ends the container and removes what it left.
func (b *buildSession) Close() error {
	b.closeOnce.Do(func() {
		b.end()
		exited := false
		select {
		case <-b.done:
			// The runtime ran the container in its foreground and removed
			// it as its init exited, unless the runtime itself failed.
			exited = b.runErr == nil
		case <-time.After(runtimeCmdTimeout):
			b.s.opts.Logger.Warn("build container did not end; deleting it", "build", b.id)
		}
		b.outFile.Close()
		ctx, cancel := context.WithTimeout(context.Background(), runtimeCmdTimeout)
		defer cancel()
		var errs []error
		if !exited {
			if err := b.s.rt.Delete(ctx, b.id, &runc.DeleteOpts{Force: true}); err != nil {
				if _, serr := b.s.rt.State(ctx, b.id); serr == nil {
					errs = append(errs, fmt.Errorf("delete build container %s: %w", b.id, err))
				}
			}
		}
		if err := removeBundle(b.bundle); err != nil {
			errs = append(errs, err)
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

// tailBuffer keeps the last bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailBytes = 4096

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailBytes {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailBytes:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
