package envbuild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// sharedCache is one uv cache for every test's Root, so each package is
// downloaded once per test run.
var sharedCache string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "envbuild-uv-cache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedCache = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func requireUV(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("uv"); err != nil {
		t.Skip("uv is not on PATH (install it with `pip install uv`)")
	}
}

// requireNetwork skips tests that install from the package index in -short.
func requireNetwork(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("installs from the package index; skipped with -short")
	}
}

// uvCounter records the uv subcommands a builder runs.
type uvCounter struct {
	mu    sync.Mutex
	calls [][]string
}

func (c *uvCounter) hook(args []string) {
	c.mu.Lock()
	c.calls = append(c.calls, slices.Clone(args))
	c.mu.Unlock()
}

// count is how many calls ran the subcommand starting with words.
func (c *uvCounter) count(words ...string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, call := range c.calls {
		if len(call) >= len(words) && slices.Equal(call[:len(words)], words) {
			n++
		}
	}
	return n
}

func (c *uvCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

func newTestBuilder(t *testing.T, opts Options) (*Builder, *uvCounter) {
	t.Helper()
	requireUV(t)
	if opts.Root == "" {
		opts.Root = t.TempDir()
	}
	if opts.CacheDir == "" {
		opts.CacheDir = sharedCache
	}
	b, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	c := &uvCounter{}
	b.uvHook = c.hook
	return b, c
}

var (
	pythonOnce sync.Once
	pythonVer  string
)

// testPython is the host's Python for tests: 3.11 where present.
func testPython(t *testing.T, b *Builder) string {
	t.Helper()
	pythonOnce.Do(func() {
		avail, err := b.availablePythons(context.Background())
		if err != nil || len(avail) == 0 {
			return
		}
		pythonVer = avail[len(avail)-1]
		if slices.Contains(avail, "3.11") {
			pythonVer = "3.11"
		}
	})
	if pythonVer == "" {
		t.Skip("uv finds no CPython on this host")
	}
	return pythonVer
}

// runPython runs code with the environment's python and returns its output.
func runPython(t *testing.T, env Env, extraEnv []string, code string) (string, error) {
	t.Helper()
	cmd := exec.Command(env.Python, "-c", code)
	cmd.Env = append(os.Environ(), extraEnv...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// lines collects logf output.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) logf(s string) { l.mu.Lock(); l.l = append(l.l, s); l.mu.Unlock() }
func (l *lines) get() []string { l.mu.Lock(); defer l.mu.Unlock(); return slices.Clone(l.l) }

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestNewWithoutUV(t *testing.T) {
	_, err := New(Options{Root: t.TempDir(), UV: filepath.Join(t.TempDir(), "no-uv-here")})
	if !errors.Is(err, ErrUVNotFound) {
		t.Fatalf("New error = %v, want ErrUVNotFound", err)
	}
	if !strings.Contains(err.Error(), "pip install uv") {
		t.Errorf("error %q does not say how to install uv", err)
	}
}

func TestEnsureEmpty(t *testing.T) {
	b, _ := newTestBuilder(t, Options{})
	py := testPython(t, b)
	var out lines
	env, err := b.Ensure(context.Background(), Spec{Python: py}, out.logf)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if len(out.get()) == 0 {
		t.Error("a build passed no output lines to logf")
	}
	wantKey, _ := b.Key(Spec{Python: py})
	if env.Key != wantKey {
		t.Errorf("Env.Key = %s, want %s", env.Key, wantKey)
	}
	if env.Dir != filepath.Join(b.envsDir, env.Key) || env.Python != filepath.Join(env.Dir, "bin", "python") {
		t.Errorf("unexpected paths: %+v", env)
	}
	if fi, err := os.Stat(env.BasePrefix); err != nil || !fi.IsDir() {
		t.Errorf("BasePrefix %q is not a directory: %v", env.BasePrefix, err)
	}
	got, err := runPython(t, env, nil, "import sys; print(sys.prefix, sys.base_prefix, '%d.%d' % sys.version_info[:2])")
	if err != nil {
		t.Fatalf("venv python: %v: %s", err, got)
	}
	if want := env.Dir + " " + env.BasePrefix + " " + py; got != want {
		t.Errorf("venv python reports %q, want %q", got, want)
	}
	if names := dirNames(t, b.tmpDir); len(names) != 0 {
		t.Errorf("tmp/ holds %v after a build", names)
	}
}

func TestEnsureSixThenReuse(t *testing.T) {
	requireNetwork(t)
	b, uv := newTestBuilder(t, Options{})
	spec := Spec{Python: testPython(t, b), Requirements: []string{"six"}}
	ctx := context.Background()

	var first lines
	env, err := b.Ensure(ctx, spec, first.logf)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if !slices.ContainsFunc(first.get(), func(l string) bool { return strings.Contains(l, "+ six==") }) {
		t.Errorf("build output does not show six being installed: %q", first.get())
	}
	if out, err := runPython(t, env, nil, "import six; print(six.__file__)"); err != nil || !strings.HasPrefix(out, env.Dir) {
		t.Errorf("import six from the venv: %v: %s", err, out)
	}

	callsBefore := uv.total()
	var second lines
	env2, err := b.Ensure(ctx, Spec{Python: spec.Python, Requirements: []string{" SIX "}}, second.logf)
	if err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if env2 != env {
		t.Errorf("second Ensure = %+v, want %+v", env2, env)
	}
	if n := uv.total() - callsBefore; n != 0 {
		t.Errorf("second Ensure ran uv %d times, want 0", n)
	}
	if l := second.get(); len(l) != 0 {
		t.Errorf("second Ensure logged %q, want nothing", l)
	}

	// A new Builder on the same Root (a server restart) reuses it too.
	b2, uv2 := newTestBuilder(t, Options{Root: b.root})
	env3, err := b2.Ensure(ctx, spec, nil)
	if err != nil || env3 != env || uv2.total() != 0 {
		t.Errorf("after restart: Ensure = %+v, %v with %d uv calls; want %+v with none", env3, err, uv2.total(), env)
	}
}

// A renamed venv must still work: its python, console scripts (whose
// shebangs would otherwise name the temporary build path) and activate.
func TestEnsureRelocatedVenvWorks(t *testing.T) {
	requireNetwork(t)
	b, _ := newTestBuilder(t, Options{})
	env, err := b.Ensure(context.Background(), Spec{Python: testPython(t, b), Requirements: []string{"cowsay"}}, nil)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	out, err := exec.Command(filepath.Join(env.Dir, "bin", "cowsay"), "-t", "moo").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "moo") {
		t.Errorf("console script after rename: %v: %s", err, out)
	}
	script := fmt.Sprintf(". %q && echo \"$VIRTUAL_ENV\"", filepath.Join(env.Dir, "bin", "activate"))
	out, err = exec.Command("bash", "-c", script).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != env.Dir {
		t.Errorf("activate after rename: VIRTUAL_ENV = %q (%v), want %q", out, err, env.Dir)
	}
}

func TestEnsureConcurrentBuildsOnce(t *testing.T) {
	requireNetwork(t)
	b, uv := newTestBuilder(t, Options{})
	// A second Builder on the same Root stands for a second server process:
	// only the file lock keeps the two apart.
	other, otherUV := newTestBuilder(t, Options{Root: b.root})
	spec := Spec{Python: testPython(t, b), Requirements: []string{"six>=1.10"}}
	const n = 6
	envs := make([]Env, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		builder := b
		if i%2 == 1 {
			builder = other
		}
		wg.Go(func() { envs[i], errs[i] = builder.Ensure(context.Background(), spec, nil) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Ensure %d: %v", i, errs[i])
		}
		if envs[i] != envs[0] {
			t.Errorf("Ensure %d = %+v, want %+v", i, envs[i], envs[0])
		}
	}
	if got := uv.count("venv") + otherUV.count("venv"); got != 1 {
		t.Errorf("uv venv ran %d times, want 1", got)
	}
}

func TestEnsureFailedBuildIsNotCached(t *testing.T) {
	requireNetwork(t)
	b, uv := newTestBuilder(t, Options{})
	spec := Spec{Python: testPython(t, b), Requirements: []string{"no-such-package-xyz-atoll"}}
	for attempt := range 2 {
		before := uv.count("pip", "install")
		var out lines
		_, err := b.Ensure(context.Background(), spec, out.logf)
		if !errors.Is(err, ErrBuildFailed) {
			t.Fatalf("attempt %d: Ensure error = %v, want ErrBuildFailed", attempt, err)
		}
		var be *BuildError
		if !errors.As(err, &be) {
			t.Fatalf("attempt %d: error %T is not a *BuildError", attempt, err)
		}
		if !strings.Contains(be.Output, "no-such-package-xyz-atoll") || !strings.Contains(err.Error(), be.Output) {
			t.Errorf("attempt %d: error does not carry uv's text: %q", attempt, err)
		}
		if uv.count("pip", "install") == before {
			t.Errorf("attempt %d: uv pip install did not run; a failure was cached", attempt)
		}
		if !slices.ContainsFunc(out.get(), func(l string) bool { return strings.Contains(l, "no-such-package-xyz-atoll") }) {
			t.Errorf("attempt %d: uv's error did not reach logf: %q", attempt, out.get())
		}
	}
	if names := dirNames(t, b.tmpDir); len(names) != 0 {
		t.Errorf("tmp/ holds %v after failed builds", names)
	}
	if names := dirNames(t, b.envsDir); len(names) != 0 {
		t.Errorf("envs/ holds %v after failed builds", names)
	}
}

func TestEnsureCancelledLeavesNothing(t *testing.T) {
	requireNetwork(t)
	b, _ := newTestBuilder(t, Options{})
	spec := Spec{Python: testPython(t, b), Requirements: []string{"six", "cowsay"}}
	ctx, cancel := context.WithCancel(context.Background())
	_, err := b.Ensure(ctx, spec, func(string) { cancel() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Ensure error = %v, want context.Canceled", err)
	}
	b.Close() // waits for the abandoned build to stop
	if names := dirNames(t, b.tmpDir); len(names) != 0 {
		t.Errorf("tmp/ holds %v after a cancelled build", names)
	}
	if names := dirNames(t, b.envsDir); len(names) != 0 {
		t.Errorf("envs/ holds %v after a cancelled build", names)
	}
	if _, err := b.Ensure(context.Background(), spec, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Ensure after Close = %v, want ErrClosed", err)
	}

	b2, _ := newTestBuilder(t, Options{Root: b.root})
	if _, err := b2.Ensure(context.Background(), spec, nil); err != nil {
		t.Errorf("Ensure after a cancelled build: %v", err)
	}
}

func TestEnsurePythonUnavailable(t *testing.T) {
	b, uv := newTestBuilder(t, Options{})
	avail, err := b.availablePythons(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, version := range []string{"2.7", "3.99"} {
		t.Run(version, func(t *testing.T) {
			_, err := b.Ensure(context.Background(), Spec{Python: version, Requirements: []string{"six"}}, nil)
			if !errors.Is(err, ErrPythonUnavailable) {
				t.Fatalf("Ensure error = %v, want ErrPythonUnavailable", err)
			}
			var pe *PythonUnavailableError
			if !errors.As(err, &pe) || pe.Requested != version {
				t.Fatalf("error %v does not name the requested version", err)
			}
			if !slices.Equal(pe.Available, avail) {
				t.Errorf("Available = %v, want %v", pe.Available, avail)
			}
			for _, v := range append([]string{version}, avail...) {
				if !strings.Contains(err.Error(), v) {
					t.Errorf("message %q does not name %s", err, v)
				}
			}
		})
	}
	if n := uv.count("venv") + uv.count("pip"); n != 0 {
		t.Errorf("ran %d uv builds for unavailable pythons", n)
	}
}

func TestNewCleansLeftovers(t *testing.T) {
	b, _ := newTestBuilder(t, Options{})
	root := b.root
	key := strings.Repeat("a", 64)
	building := strings.Repeat("b", 64)
	leftovers := []string{
		filepath.Join(root, "tmp", key+".0123456789ab", "bin"),         // interrupted build
		filepath.Join(root, "envs", strings.Repeat("c", 64), "lib"),    // no marker
		filepath.Join(root, "runtime", strings.Repeat("d", 64), "pkg"), // no marker
		filepath.Join(root, "trash", key+".ba9876543210", "lib"),       // interrupted removal
	}
	inProgress := filepath.Join(root, "tmp", building+".0123456789ab", "bin")
	for _, d := range append(leftovers, inProgress) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Another process is building `building`: it holds the key's lock.
	lk, ok, err := tryLockFile(b.lockPath(building), lockExclusive)
	if err != nil || !ok {
		t.Fatalf("lock: %v %v", ok, err)
	}
	defer lk.unlock()

	newTestBuilder(t, Options{Root: root})
	for _, d := range leftovers {
		if _, err := os.Stat(filepath.Dir(d)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("leftover %s still there (%v)", filepath.Dir(d), err)
		}
	}
	if _, err := os.Stat(inProgress); err != nil {
		t.Errorf("New removed another process's build in progress: %v", err)
	}
}

// age makes an environment look last used d ago.
func age(t *testing.T, b *Builder, key string, d time.Duration) {
	t.Helper()
	when := time.Now().Add(-d)
	if err := os.Chtimes(filepath.Join(b.envDir(key), envMarker), when, when); err != nil {
		t.Fatal(err)
	}
}

func keys(infos []Info) []string {
	var ks []string
	for _, in := range infos {
		ks = append(ks, in.Key)
	}
	slices.Sort(ks)
	return ks
}

func TestPrune(t *testing.T) {
	requireNetwork(t)
	b, _ := newTestBuilder(t, Options{})
	py := testPython(t, b)
	ctx := context.Background()
	build := func(reqs ...string) Env {
		t.Helper()
		env, err := b.Ensure(ctx, Spec{Python: py, Requirements: reqs}, nil)
		if err != nil {
			t.Fatalf("Ensure %v: %v", reqs, err)
		}
		return env
	}
	empty, six, cowsay := build(), build("six"), build("cowsay")

	infos, err := b.List()
	if err != nil || len(infos) != 3 {
		t.Fatalf("List = %v, %v; want 3 environments", infos, err)
	}
	for _, in := range infos {
		if in.SizeBytes <= 0 || in.LastUsed.IsZero() || in.Python != py || in.InUse != 0 {
			t.Errorf("List entry %+v is incomplete", in)
		}
	}

	t.Run("by age, never in use", func(t *testing.T) {
		age(t, b, empty.Key, 2*time.Hour)
		age(t, b, six.Key, 3*time.Hour)
		_, release, err := b.EnsureAcquire(context.Background(), Spec{Python: py, Requirements: []string{"six"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		removed, err := b.Prune(time.Hour, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := keys(removed); !slices.Equal(got, []string{empty.Key}) {
			t.Errorf("Prune removed %v, want only %v", got, empty.Key)
		}
		if _, err := os.Stat(six.Python); err != nil {
			t.Errorf("Prune removed an environment in use: %v", err)
		}
		release()
		release() // idempotent
		age(t, b, six.Key, 3*time.Hour)
		removed, err = b.Prune(time.Hour, 0)
		if err != nil || !slices.Equal(keys(removed), []string{six.Key}) {
			t.Errorf("after release, Prune = %v, %v; want %v removed", keys(removed), err, six.Key)
		}
	})

	t.Run("in use by another process", func(t *testing.T) {
		// A shared flock on its own descriptor is exactly what another
		// process's Acquire holds.
		lk, ok, err := tryLockFile(b.lockPath(cowsay.Key), lockShared)
		if err != nil || !ok {
			t.Fatalf("lock: %v %v", ok, err)
		}
		infos, _ := b.List()
		if len(infos) != 1 || infos[0].InUse != 1 {
			t.Errorf("List = %+v, want cowsay InUse 1", infos)
		}
		if removed, err := b.Prune(0, 1); err != nil || len(removed) != 0 {
			t.Errorf("Prune = %v, %v; want nothing removed", keys(removed), err)
		}
		lk.unlock()
	})

	t.Run("by size, least recently used first", func(t *testing.T) {
		again := build() // rebuild empty
		age(t, b, again.Key, time.Minute)
		infos, _ := b.List()
		var total int64
		for _, in := range infos {
			total += in.SizeBytes
		}
		// Room for the larger, more recently used cowsay only.
		removed, err := b.Prune(0, total-1)
		if err != nil || !slices.Equal(keys(removed), []string{again.Key}) {
			t.Errorf("Prune by size = %v, %v; want %v", keys(removed), err, again.Key)
		}
	})
}

func TestEnsureAcquireAndEviction(t *testing.T) {
	requireNetwork(t)
	b, _ := newTestBuilder(t, Options{MaxTotalBytes: 1})
	py := testPython(t, b)
	ctx := context.Background()
	held, release, err := b.EnsureAcquire(ctx, Spec{Python: py}, nil)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := b.Ensure(ctx, Spec{Python: py, Requirements: []string{"six"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Over the limit, but one is in use and the other was just built.
	if got := keys(mustList(t, b)); !slices.Equal(got, keys([]Info{{Key: held.Key}, {Key: idle.Key}})) {
		t.Fatalf("environments = %v, want both", got)
	}
	release()
	if _, err := b.Ensure(ctx, Spec{Python: py, Requirements: []string{"cowsay"}}, nil); err != nil {
		t.Fatal(err)
	}
	infos := mustList(t, b)
	if len(infos) != 1 || slices.Contains(keys(infos), held.Key) || slices.Contains(keys(infos), idle.Key) {
		t.Errorf("after a build over MaxTotalBytes, environments = %v, want only the new one", keys(infos))
	}
}

func mustList(t *testing.T, b *Builder) []Info {
	t.Helper()
	infos, err := b.List()
	if err != nil {
		t.Fatal(err)
	}
	return infos
}

func TestRuntime(t *testing.T) {
	requireNetwork(t)
	b, uv := newTestBuilder(t, Options{RuntimeLock: []byte("cloudpickle==3.1.3 \\\n    --hash=sha256:cbe9fde14429a5db009ea05ce94e5182cf998c97b96918d50c10f73f9c2f4f33\n")})
	py := testPython(t, b)
	ctx := context.Background()
	dir, err := b.Runtime(ctx, py, nil)
	if err != nil {
		t.Fatalf("Runtime: %v", err)
	}
	env, err := b.Ensure(ctx, Spec{Python: py}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := runPython(t, env, []string{"PYTHONPATH=" + dir}, "import cloudpickle; print(cloudpickle.__file__, cloudpickle.__version__)")
	if err != nil || !strings.HasPrefix(out, dir) || !strings.HasSuffix(strings.TrimSpace(out), " 3.1.3") {
		t.Errorf("import cloudpickle with PYTHONPATH=%s: %v: %s; want the locked 3.1.3 from there", dir, err, out)
	}
	if out, err := runPython(t, env, nil, "import cloudpickle"); err == nil {
		t.Errorf("cloudpickle is importable from the user's venv without the runtime dir: %s", out)
	}

	before := uv.total()
	again, err := b.Runtime(ctx, py, nil)
	if err != nil || again != dir || uv.total() != before {
		t.Errorf("second Runtime = %q, %v after %d uv calls; want %q and none", again, err, uv.total()-before, dir)
	}
}

// A lock whose hash does not match what the index serves is refused: the
// runtime holds exactly what the lock names, or nothing.
func TestRuntimeRefusesAWrongHash(t *testing.T) {
	requireNetwork(t)
	wrong := "cloudpickle==3.1.3 \\\n    --hash=sha256:" + strings.Repeat("0", 64) + "\n"
	b, _ := newTestBuilder(t, Options{RuntimeLock: []byte(wrong)})
	dir, err := b.Runtime(context.Background(), testPython(t, b), nil)
	if err == nil {
		t.Fatalf("Runtime with a wrong hash built %s", dir)
	}
	if !strings.Contains(strings.ToLower(err.Error()), "hash") {
		t.Errorf("Runtime with a wrong hash: %v; want uv's hash mismatch", err)
	}
}

func TestLockIsHashed(t *testing.T) {
	for _, tc := range []struct {
		name string
		lock string
		want bool
	}{
		{"hashed, continued", "# comment\na==1 \\\n    --hash=sha256:ab \\\n    --hash=sha256:cd\n    # via x\nb==2 --hash=sha256:ef\n", true},
		{"one line unhashed", "a==1 --hash=sha256:ab\nb>=2\n", false},
		{"ranges only", "cloudpickle>=3\n", false},
		{"empty", "# nothing\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lockIsHashed([]byte(tc.lock)); got != tc.want {
				t.Errorf("lockIsHashed(%q) = %v, want %v", tc.lock, got, tc.want)
			}
		})
	}
}

// BenchmarkEnsureWarmCache measures building ["pyjokes", "cowsay", "six"]
// from a uv cache that already holds them: "fresh-root" starts a new
// Builder on an empty Root each time (interpreter discovery included),
// "server" rebuilds with a running Builder after pruning the environment,
// "server-online" does so asking the index (Options.ResolveOnline).
func BenchmarkEnsureWarmCache(b *testing.B) {
	requireUV(b)
	requireNetwork(b)
	cache := b.TempDir()
	spec := Spec{Python: "3.11", Requirements: []string{"pyjokes", "cowsay", "six"}}
	warm, err := New(Options{Root: b.TempDir(), CacheDir: cache})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := warm.Ensure(context.Background(), spec, nil); err != nil {
		b.Fatal(err)
	}

	b.Run("fresh-root", func(b *testing.B) {
		var calls atomic.Int64
		for b.Loop() {
			b.StopTimer()
			builder, err := New(Options{Root: b.TempDir(), CacheDir: cache})
			if err != nil {
				b.Fatal(err)
			}
			builder.uvHook = func([]string) { calls.Add(1) }
			b.StartTimer()
			if _, err := builder.Ensure(context.Background(), spec, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(calls.Load())/float64(b.N), "uv-calls/op")
	})
	for _, online := range []bool{false, true} {
		name := "server"
		if online {
			name = "server-online"
		}
		b.Run(name, func(b *testing.B) {
			builder, err := New(Options{Root: b.TempDir(), CacheDir: cache, ResolveOnline: online})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := builder.interpreter(context.Background(), spec.Python); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := builder.Ensure(context.Background(), spec, nil); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if removed, err := builder.Prune(0, 1); err != nil || len(removed) != 1 {
					b.Fatalf("Prune = %v, %v", removed, err)
				}
				b.StartTimer()
			}
		})
	}
}
