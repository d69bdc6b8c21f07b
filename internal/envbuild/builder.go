// Package envbuild owns the Python environments atoll runs functions in. It
// names an environment by its spec (Key), builds it once with uv into a venv
// under its Root with one shared uv cache, keeps it while it is in use
// (Acquire), and removes it when asked (Prune) or when the Root grows past
// its limit. It also builds the runner's own packages (Runtime) into a
// directory beside the venvs, never inside them, so a user's environment
// holds exactly the user's requirements. Requirement strings are parsed
// with the PEP 508 grammar (requirement.go); those naming this host's paths
// are refused unless Options.AllowLocalRequirements.
//
// With a Sandbox (Options.Sandbox), its uv steps run in build sessions
// that see only what a BuildView names, in two phases that keep package
// build code away from the shared cache (sandboxed.go). It says what a
// build may see; how that is enforced is the Sandbox's (package sandbox).
//
// It must not know about calls, accounts, workers or containers, must
// never install into a base interpreter, and must never download an
// interpreter: the package index is its only network traffic.
//
// Layout under Root:
//
//	cache/           the uv cache (unless Options.CacheDir)
//	envs/<key>/      finished venvs, each with its atoll-env.json marker
//	runtime/<key>/   finished runner support directories
//	tmp/<key>.<rnd>  builds in progress; removed at start if abandoned
//	trash/           environments being deleted
//	locks/<key>.lock flock files shared by every process using Root
//	host.json        the uv binary and interpreters found (hostfacts.go)
//	templates/<key>  empty venvs as uv made them, copied into new builds
//	                 (template.go)
package envbuild

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Builder.
type Options struct {
	// Root is the directory owned by the builder (e.g. <data-dir>/envs): it
	// holds the venvs, the uv cache and builds in progress.
	Root string
	// UV is the uv binary's path or name; "" looks up "uv" on PATH.
	UV string
	// Logger receives the builder's own events; nil discards them.
	Logger *slog.Logger
	// MaxTotalBytes, when positive, bounds the environments' total size:
	// after each build, the least recently used environments not in use are
	// removed until the total fits.
	MaxTotalBytes int64
	// RuntimeLock is a requirements file of the packages the in-worker
	// runner needs (e.g. "cloudpickle==3.1.3 --hash=sha256:..."). Runtime
	// installs it per Python version into its own directory, never into a
	// user's venv. When every line carries hashes it is installed in
	// hash-checking mode with no further resolution, so a runtime holds
	// exactly what the lock names.
	RuntimeLock []byte

	// CacheDir overrides the uv cache location (default Root/cache), to share
	// one cache between Roots. Venvs are hard-linked from the cache only when
	// both are on one filesystem; otherwise uv copies.
	CacheDir string
	// CompileBytecode compiles the user's packages to .pyc at build time.
	// It makes builds slower and cold starts faster where the venv is
	// mounted read-only (Python cannot then cache bytecode itself). The
	// runtime directory is always compiled.
	CompileBytecode bool
	// ResolveOnline makes every build ask the package index. By default a
	// build first resolves from the uv cache alone (no network, ~0.3 s
	// faster) and asks the index only when the cache cannot satisfy the
	// requirements; unpinned requirements then get the newest version the
	// cache holds rather than the newest on the index.
	ResolveOnline bool
	// Provided names distributions every worker already has beside its venv
	// (the atoll SDK itself): requirements naming them are dropped, so a
	// user listing them never gets an unrelated package of that name.
	Provided []string
	// AllowLocalRequirements lets requirements name paths, archives and
	// repositories on this host ("pkg @ file:///srv/pkg", "./pkg",
	// "pkg @ git+file:///srv/repo"). Off, any account could copy the
	// host's files into its environment.
	AllowLocalRequirements bool
	// SeedPip installs pip into every venv, so that `pip` and `pip freeze`
	// run inside a function see the function's own environment (pip hides
	// itself from `pip freeze`, which then lists only the user's packages).
	SeedPip bool
	// NoBuild installs pre-built wheels only (uv --no-build). Building a
	// source distribution runs the package's own build code on this host,
	// outside any sandbox, with the server's privileges.
	NoBuild bool
	// OnBuild, if set, is told of every environment this process built (not
	// those found ready): how long the build took and how it failed, if it
	// did. Metrics count builds with it.
	OnBuild func(took time.Duration, err error)
	// Sandbox runs the builds' uv steps. Nil runs them as plain children
	// of this process, with its privileges and its view of the host. With
	// one, a build is made in two phases that keep one account's build
	// code from changing what another's environment holds (see
	// sandboxed.go).
	Sandbox Sandbox
}

// Spec describes an environment.
type Spec struct {
	Python       string   // major.minor, e.g. "3.11"
	Requirements []string // PEP 508 requirement strings
}

// Env is a ready environment.
type Env struct {
	// Key is the hex sha256 of the Python major.minor, the normalized sorted
	// requirements and the uv version.
	Key string
	// Dir is the venv's absolute path.
	Dir string
	// Python is the absolute path of the venv's python.
	Python string
	// BasePrefix is the base interpreter's sys.base_prefix, which a sandbox
	// must also mount read-only (the venv's python links into it).
	BasePrefix string
}

// Info describes a built environment.
type Info struct {
	Key          string
	Python       string // major.minor
	Requirements []string
	// SizeBytes is the venv's apparent size. Files hard-linked from the uv
	// cache count in full, though removing the venv does not free them.
	SizeBytes int64
	LastUsed  time.Time
	// InUse counts this process's holds; 1 when only another process (or a
	// rebuild) holds it.
	InUse int
}

// Builder builds and keeps environments under one Root. It is safe for
// concurrent use, and several processes may share one Root.
type Builder struct {
	root, envsDir, runtimeDir, tmpDir, trashDir, locksDir, cacheDir string
	templatesDir                                                    string

	uv        string
	uvVersion string
	uvEnv     []string
	log       *slog.Logger
	facts     *factStore

	maxTotalBytes   int64
	runtimeLock     []byte
	compileBytecode bool
	seedPip         bool
	provided        []string
	allowLocal      bool
	resolveOnline   bool
	noBuild         bool
	onBuild         func(time.Duration, error)
	sandbox         Sandbox

	mu      sync.Mutex
	closed  bool
	flights map[string]*flight
	uses    map[string]*use
	pythons map[string]interpreter
	// available caches availablePythons for availableTTL.
	available   []string
	availableAt time.Time
	wg          sync.WaitGroup

	uvCalls atomic.Int64
	uvHook  func(args []string) // tests observe uv invocations
}

// use counts this process's holds on one environment. While count > 0 the
// process holds a shared flock on the key, which keeps other processes from
// removing it.
type use struct {
	mu    sync.Mutex
	count int
	lock  *fileLock
}

const (
	envMarker     = "atoll-env.json"
	runtimeMarker = ".atoll-runtime.json"
)

// envMeta is the completion marker written into a venv before it is moved
// into place. Its modification time is the environment's last use.
type envMeta struct {
	Key           string    `json:"key"`
	Python        string    `json:"python"`
	PythonVersion string    `json:"python_version"`
	Interpreter   string    `json:"interpreter"`
	BasePrefix    string    `json:"base_prefix"`
	Requirements  []string  `json:"requirements"`
	UVVersion     string    `json:"uv_version"`
	Created       time.Time `json:"created"`
	SizeBytes     int64     `json:"size_bytes"`
}

// New prepares a Builder on opts.Root, creating its directories and removing
// what interrupted builds left behind.
func New(opts Options) (*Builder, error) {
	if opts.Root == "" {
		return nil, errors.New("envbuild: Options.Root is required")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("envbuild: root: %w", err)
	}
	cacheDir := filepath.Join(root, "cache")
	if opts.CacheDir != "" {
		if cacheDir, err = filepath.Abs(opts.CacheDir); err != nil {
			return nil, fmt.Errorf("envbuild: cache dir: %w", err)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	uv, err := findUV(opts.UV)
	if err != nil {
		return nil, err
	}
	b := &Builder{
		root:         root,
		envsDir:      filepath.Join(root, "envs"),
		runtimeDir:   filepath.Join(root, "runtime"),
		tmpDir:       filepath.Join(root, "tmp"),
		trashDir:     filepath.Join(root, "trash"),
		locksDir:     filepath.Join(root, "locks"),
		templatesDir: filepath.Join(root, "templates"),
		cacheDir:     cacheDir,
		uv:           uv,
		// Cache and venvs live under one Root, so files are hard-linked
		// from the cache; uv falls back to copying across filesystems.
		uvEnv:           uvEnviron(cacheDir, "hardlink"),
		log:             log,
		maxTotalBytes:   opts.MaxTotalBytes,
		runtimeLock:     opts.RuntimeLock,
		compileBytecode: opts.CompileBytecode,
		seedPip:         opts.SeedPip,
		provided:        canonicalNames(opts.Provided),
		allowLocal:      opts.AllowLocalRequirements,
		resolveOnline:   opts.ResolveOnline,
		noBuild:         opts.NoBuild,
		onBuild:         opts.OnBuild,
		sandbox:         opts.Sandbox,
		flights:         map[string]*flight{},
		uses:            map[string]*use{},
		pythons:         map[string]interpreter{},
	}
	for _, d := range []string{b.envsDir, b.runtimeDir, b.tmpDir, b.trashDir, b.locksDir, b.templatesDir, b.cacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("envbuild: %w", err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t := time.Now()
	b.facts = openFactStore(root)
	if err := b.findUV(ctx); err != nil {
		return nil, err
	}
	b.logStep("", "find uv", &t)
	b.cleanup()
	b.logStep("", "clean up", &t)
	return b, nil
}

// findUV settles which uv binary builds run and its version: remembered
// from an earlier process on this Root when that still holds (hostfacts.go),
// else asked of uv itself.
func (b *Builder) findUV(ctx context.Context) error {
	configured := b.uv
	if real, version, ok := b.facts.uv(configured); ok {
		b.uv, b.uvVersion = real, version
		return nil
	}
	if isScript(b.uv) {
		if real := b.resolveScriptUV(ctx); real != "" {
			b.log.Debug("using uv binary behind wrapper", "wrapper", b.uv, "uv", real)
			b.uv = real
		}
	}
	stdout, stderr, err := b.uvOutput(ctx, "--version")
	if err != nil {
		return fmt.Errorf("envbuild: %w: %s --version: %v %s", ErrUVNotFound, b.uv, err, strings.TrimSpace(stderr))
	}
	b.uvVersion = parseUVVersion(stdout)
	b.facts.setUV(configured, b.uv, b.uvVersion)
	return nil
}

// parseUVVersion takes "0.13.8" from "uv 0.13.8 (abc 2025-01-01)".
func parseUVVersion(out string) string {
	f := strings.Fields(out)
	if len(f) >= 2 && f[0] == "uv" {
		return f[1]
	}
	return strings.TrimSpace(out)
}

// Close cancels builds in progress and waits for them to stop. Callers still
// waiting get an error; environments already built stay.
func (b *Builder) Close() error {
	b.mu.Lock()
	b.closed = true
	for _, f := range b.flights {
		f.cancel()
	}
	b.mu.Unlock()
	b.wg.Wait()
	return nil
}

// Key returns the environment key for spec without building anything.
func (b *Builder) Key(spec Spec) (string, error) {
	s, err := b.normalize(spec)
	if err != nil {
		return "", err
	}
	return envKey(s, b.uvVersion, b.seedPip), nil
}

// Ensure returns a ready environment for spec, building it if needed; build
// output lines go to logf (which may be nil, and must not block for long)
// as uv prints them. Concurrent calls for one key build once. A failed build
// wraps ErrBuildFailed and is not remembered: the next call tries again.
//
// Between Ensure returning and Acquire, a concurrent Prune may remove the
// environment; EnsureAcquire closes that gap.
func (b *Builder) Ensure(ctx context.Context, spec Spec, logf func(line string)) (Env, error) {
	env, _, err := b.ensure(ctx, spec, logf, false)
	return env, err
}

// EnsureAcquire is Ensure followed by Acquire, with no moment in between in
// which the environment could be pruned. The caller must call release.
func (b *Builder) EnsureAcquire(ctx context.Context, spec Spec, logf func(line string)) (env Env, release func(), err error) {
	return b.ensure(ctx, spec, logf, true)
}

func (b *Builder) ensure(ctx context.Context, spec Spec, logf func(string), hold bool) (Env, func(), error) {
	s, err := b.normalize(spec)
	if err != nil {
		return Env{}, nil, err
	}
	key := envKey(s, b.uvVersion, b.seedPip)
	for attempt := 0; attempt < 3; attempt++ {
		if _, _, ok := b.lookup(key); !ok {
			err := b.join(ctx, "env:"+key, logf, func(ctx context.Context, logf func(string)) error {
				if err := b.buildEnv(ctx, key, s, logf); err != nil {
					return err
				}
				if b.maxTotalBytes > 0 {
					b.evict(key)
				}
				return nil
			})
			if err != nil {
				return Env{}, nil, err
			}
		}
		release := func() {}
		if hold {
			if release, err = b.acquire(ctx, key); err != nil {
				return Env{}, nil, err
			}
		}
		if env, _, ok := b.lookup(key); ok {
			b.touch(key)
			return env, release, nil
		}
		release() // removed between the build and now: build again
	}
	return Env{}, nil, fmt.Errorf("envbuild: environment %s was removed while being prepared", key)
}

func (b *Builder) acquire(ctx context.Context, key string) (func(), error) {
	b.mu.Lock()
	u := b.uses[key]
	if u == nil {
		u = &use{}
		b.uses[key] = u
	}
	b.mu.Unlock()

	u.mu.Lock()
	if u.count == 0 {
		lk, err := lockFile(ctx, b.lockPath(key), lockShared)
		if err != nil {
			if ctx.Err() != nil {
				u.mu.Unlock()
				return nil, fmt.Errorf("envbuild: acquire %s: %w", key, err)
			}
			// Still held in this process; other processes cannot see it.
			b.log.Warn("cannot lock environment; in use only for this process", "env", key, "err", err)
		}
		u.lock = lk
	}
	u.count++
	u.mu.Unlock()

	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			u.count--
			if u.count == 0 {
				u.lock.unlock()
				u.lock = nil
			}
			u.mu.Unlock()
			b.touch(key)
		})
	}, nil
}

// inUse is this process's hold count on key.
func (b *Builder) inUse(key string) int {
	b.mu.Lock()
	u := b.uses[key]
	b.mu.Unlock()
	if u == nil {
		return 0
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.count
}

// List describes the built environments, most recently used first.
func (b *Builder) List() ([]Info, error) {
	entries, err := os.ReadDir(b.envsDir)
	if err != nil {
		return nil, fmt.Errorf("envbuild: list: %w", err)
	}
	var infos []Info
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		key := e.Name()
		meta, lastUsed, err := readMeta(filepath.Join(b.envsDir, key, envMarker))
		if err != nil {
			continue // not a finished environment
		}
		in := Info{
			Key:          key,
			Python:       meta.Python,
			Requirements: meta.Requirements,
			SizeBytes:    meta.SizeBytes,
			LastUsed:     lastUsed,
			InUse:        b.inUse(key),
		}
		if in.InUse == 0 && b.lockedElsewhere(key) {
			in.InUse = 1
		}
		infos = append(infos, in)
	}
	slices.SortFunc(infos, func(x, y Info) int { return y.LastUsed.Compare(x.LastUsed) })
	return infos, nil
}

// lockedElsewhere reports whether another process (or a build) holds key.
func (b *Builder) lockedElsewhere(key string) bool {
	lk, ok, err := tryLockFile(b.lockPath(key), lockExclusive)
	if err != nil {
		return false
	}
	if ok {
		lk.unlock()
	}
	return !ok
}

// Prune removes environments not used for olderThan (0: any age) and then,
// least recently used first, environments until their total size is at most
// maxTotalBytes (0: no limit). It never removes an environment in use by
// this or another process, and returns what it removed.
func (b *Builder) Prune(olderThan time.Duration, maxTotalBytes int64) ([]Info, error) {
	return b.prune(olderThan, maxTotalBytes, "")
}

func (b *Builder) prune(olderThan time.Duration, maxTotalBytes int64, keep string) ([]Info, error) {
	if olderThan <= 0 && maxTotalBytes <= 0 {
		return nil, nil
	}
	infos, err := b.List()
	if err != nil {
		return nil, err
	}
	slices.Reverse(infos) // least recently used first
	var total int64
	for _, in := range infos {
		total += in.SizeBytes
	}
	now := time.Now()
	var removed []Info
	var errs []error
	for _, in := range infos {
		expired := olderThan > 0 && now.Sub(in.LastUsed) > olderThan
		over := maxTotalBytes > 0 && total > maxTotalBytes
		if (!expired && !over) || in.Key == keep || in.InUse > 0 {
			continue
		}
		ok, err := b.remove(in)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			total -= in.SizeBytes
			removed = append(removed, in)
			b.log.Info("removed environment", "env", in.Key, "size", in.SizeBytes, "last_used", in.LastUsed)
		}
	}
	return removed, errors.Join(errs...)
}

// evict applies MaxTotalBytes after a build, sparing the environment just
// built.
func (b *Builder) evict(built string) {
	if _, err := b.prune(0, b.maxTotalBytes, built); err != nil {
		b.log.Warn("evicting environments failed", "err", err)
	}
}
