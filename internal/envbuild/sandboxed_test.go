package envbuild

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// recordingSandbox runs sessions as plain processes and records what each
// was allowed to see: the two-phase logic, without a container runtime
// (package sandbox tests the containers).
type recordingSandbox struct {
	mu    sync.Mutex
	views []BuildView
}

func (r *recordingSandbox) Open(_ context.Context, v BuildView) (BuildSession, error) {
	r.mu.Lock()
	r.views = append(r.views, v)
	r.mu.Unlock()
	return plainSession{env: v.Env}, nil
}

func (r *recordingSandbox) get() []BuildView {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.views)
}

func envValue(env []string, key string) string {
	for _, kv := range slices.Backward(env) {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// ownCache gives opts a Root with the cache at its default place inside
// it, as a server has it (the tests' shared cache lies elsewhere).
func ownCache(t *testing.T, opts Options) Options {
	opts.Root = t.TempDir()
	opts.CacheDir = filepath.Join(opts.Root, "cache")
	return opts
}

func TestSandboxedWheelsOnlyBuildIsOnePhase(t *testing.T) {
	requireNetwork(t)
	sb := &recordingSandbox{}
	b, uv := newTestBuilder(t, ownCache(t, Options{Sandbox: sb, SeedPip: true, CompileBytecode: true}))
	env, err := b.Ensure(context.Background(), Spec{Python: testPython(t, b), Requirements: []string{"six"}}, nil)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	views := sb.get()
	if len(views) != 1 {
		t.Fatalf("%d sessions, want 1: %+v", len(views), views)
	}
	v := views[0]
	if !slices.Equal(v.Writable, []string{b.root}) {
		t.Errorf("Writable = %v, want the root alone (one mount, so uv can link from the cache)", v.Writable)
	}
	for _, d := range []string{b.envsDir, b.runtimeDir, b.locksDir, b.trashDir} {
		if !slices.Contains(v.Hidden, d) {
			t.Errorf("Hidden = %v lacks %s", v.Hidden, d)
		}
	}
	if !slices.Contains(v.Owned, b.cacheDir) || !slices.Contains(v.Recursive, b.cacheDir) {
		t.Errorf("the cache is not the session's to write: %+v", v)
	}
	// Wheels only, pip in the same run, no uv compiling (it would start the
	// venv's Python with site, running the .pth files just installed).
	for _, call := range uv.calls {
		if call[0] != "pip" {
			continue
		}
		if !slices.Contains(call, "--no-build") || slices.Contains(call, "--compile-bytecode") {
			t.Errorf("wheels phase ran %v; want --no-build and no --compile-bytecode", call)
		}
		if !slices.Contains(call, "six") || !slices.Contains(call, "pip") {
			t.Errorf("wheels phase ran %v; want the requirements and pip in one run", call)
		}
	}
	out, err := runPython(t, env, nil, "import six, pip, os, importlib.util as u; print(os.path.exists(u.cache_from_source(six.__file__)))")
	if err != nil || out != "True" {
		t.Errorf("six, pip and six's bytecode in the venv: %v: %s", err, out)
	}
}

func TestSandboxedSourceBuildIsIsolated(t *testing.T) {
	requireNetwork(t)
	sb := &recordingSandbox{}
	b, _ := newTestBuilder(t, ownCache(t, Options{Sandbox: sb, SeedPip: true}))
	env, err := b.Ensure(context.Background(), Spec{Python: testPython(t, b), Requirements: []string{"docopt==0.6.2"}}, nil)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	views := sb.get()
	if len(views) != 2 {
		t.Fatalf("%d sessions, want 2 (wheels, then source): %+v", len(views), views)
	}
	src := views[1]
	if src.ID == views[0].ID {
		t.Errorf("the source phase reused the wheels phase's directory %s, whose files may be the cache's", src.ID)
	}
	venv := filepath.Join(b.tmpDir, src.ID)
	want := []string{venv, venv + scratchSuffix}
	if !slices.Equal(src.Writable, want) || !slices.Equal(src.Owned, want) {
		t.Errorf("source phase may write %v (owns %v), want only %v", src.Writable, src.Owned, want)
	}
	for _, p := range append(slices.Clone(src.ReadOnly), src.Writable...) {
		if isUnder(b.cacheDir, p) || isUnder(p, b.cacheDir) || isUnder(b.envsDir, p) || isUnder(p, b.envsDir) {
			t.Errorf("source phase sees %s, which holds or is the shared cache or environments", p)
		}
	}
	if c := envValue(src.Env, "UV_CACHE_DIR"); !isUnder(c, venv+scratchSuffix) {
		t.Errorf("source phase cache %q, want a private one under its scratch directory", c)
	}
	if m := envValue(src.Env, "UV_LINK_MODE"); m != "copy" {
		t.Errorf("source phase link mode %q, want copy", m)
	}
	if out, err := runPython(t, env, nil, "import docopt, pip; print(docopt.__version__)"); err != nil || out != "0.6.2" {
		t.Errorf("docopt in the venv: %v: %s", err, out)
	}
	if names := dirNames(t, b.tmpDir); len(names) != 0 {
		t.Errorf("tmp/ holds %v after the build", names)
	}
}

func TestSandboxedNoBuildNeverRunsASourcePhase(t *testing.T) {
	requireNetwork(t)
	sb := &recordingSandbox{}
	b, _ := newTestBuilder(t, ownCache(t, Options{Sandbox: sb, NoBuild: true}))
	_, err := b.Ensure(context.Background(), Spec{Python: testPython(t, b), Requirements: []string{"docopt==0.6.2"}}, nil)
	if !errors.Is(err, ErrBuildFailed) {
		t.Fatalf("Ensure = %v, want ErrBuildFailed", err)
	}
	if n := len(sb.get()); n != 1 {
		t.Errorf("%d sessions, want 1: with NoBuild there is no source phase", n)
	}
}
