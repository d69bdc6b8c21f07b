package sandbox

import (
	"context"
	"errors"
	"github.com/google/go-cmp/cmp"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/atoll-dev/atoll/internal/envbuild"
)

// The test binary is its own build container's init (helper process
// pattern): started as "<test binary> build-init", it is BuildInit.
func init() {
	if len(os.Args) == 2 && os.Args[1] == "build-init" {
		os.Exit(BuildInit(os.Stdin, os.Stdout))
	}
}

func testBuildSandbox(t *testing.T, protected ...string) *BuildSandbox {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewBuildSandbox(BuildOptions{StateDir: filepath.Join(t.TempDir(), "state"), InitPath: exe, Protected: protected})
	if err != nil {
		t.Fatalf("NewBuildSandbox: %v", err)
	}
	return s
}

func TestBuildSandboxSpec(t *testing.T) {
	if _, err := os.Stat("/usr"); err != nil {
		t.Skip("no /usr on this host")
	}
	data := t.TempDir()
	root := filepath.Join(data, "envs")
	s := &BuildSandbox{opts: BuildOptions{UID: NobodyID, GID: NobodyID, InitPath: "/opt/atoll/atoll", StateDir: filepath.Join(data, "build-sandbox"),
		Protected: []string{data}, CgroupParent: "/atoll-builds", Pids: 64}}
	spec, err := s.spec("b-1", envbuild.BuildView{
		ID:       "1",
		Writable: []string{root},
		Hidden:   []string{filepath.Join(root, "envs")},
		ReadOnly: []string{"/opt/python/bin/python3", "/opt/python", "/usr/bin/uv"},
		Env:      []string{"UV_CACHE_DIR=/x", "HOME=/root"},
	})
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	p := spec.Process
	if p.User.UID != NobodyID || p.User.GID != NobodyID || !p.NoNewPrivileges {
		t.Errorf("process user %+v, no_new_privs %v; want nobody and true", p.User, p.NoNewPrivileges)
	}
	for name, set := range map[string][]string{"bounding": p.Capabilities.Bounding, "effective": p.Capabilities.Effective, "permitted": p.Capabilities.Permitted} {
		if len(set) != 0 {
			t.Errorf("%s capabilities %v, want none", name, set)
		}
	}
	if !slices.Equal(p.Args, []string{"/opt/atoll/atoll", "build-init"}) {
		t.Errorf("args %v", p.Args)
	}
	if !slices.Contains(p.Env, "HOME=/tmp") || slices.Contains(p.Env, "HOME=/root") {
		t.Errorf("env %v: HOME must be the sandbox's own", p.Env)
	}
	if spec.Linux.Seccomp == nil || spec.Linux.Seccomp.Syscalls == nil {
		t.Fatal("no seccomp profile")
	}
	// The workers' default, whose contents seccomp_test.go checks.
	if diff := cmp.Diff(DefaultSeccomp(), spec.Linux.Seccomp); diff != "" {
		t.Errorf("build seccomp profile differs from DefaultSeccomp (-want +got):\n%s", diff)
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.UserNamespace || ns.Type == specs.NetworkNamespace {
			t.Errorf("namespace %s: builds use the host's user IDs and network", ns.Type)
		}
	}
	if spec.Linux.Resources.Pids == nil || *spec.Linux.Resources.Pids.Limit != 64 {
		t.Errorf("pids limit %+v, want 64", spec.Linux.Resources.Pids)
	}

	var dests []string
	mounts := map[string]specs.Mount{}
	for _, m := range spec.Mounts {
		dests = append(dests, m.Destination)
		mounts[m.Destination] = m
	}
	if m := mounts[root]; m.Type != "bind" || !slices.Contains(m.Options, "rw") {
		t.Errorf("writable root mount %+v", m)
	}
	hidden := filepath.Join(root, "envs")
	if m := mounts[hidden]; m.Type != "tmpfs" || !slices.Contains(m.Options, "ro") || slices.Index(dests, hidden) < slices.Index(dests, root) {
		t.Errorf("hidden directory mount %+v must be an empty read-only tmpfs after its parent (%v)", m, dests)
	}
	if _, ok := mounts["/opt/python/bin/python3"]; ok {
		t.Errorf("a path under a mounted one is mounted again: %v", dests)
	}
	if m := mounts["/opt/python"]; !slices.Contains(m.Options, "ro") {
		t.Errorf("read-only path mount %+v", m)
	}
	for _, d := range dests {
		if d == data || d == s.opts.StateDir {
			t.Errorf("the data directory or state directory is mounted: %v", dests)
		}
	}

	for _, tc := range []struct {
		name string
		view envbuild.BuildView
	}{
		{"the data directory", envbuild.BuildView{Writable: []string{data}}},
		{"a parent of it", envbuild.BuildView{ReadOnly: []string{filepath.Dir(data)}}},
		{"the state directory", envbuild.BuildView{Writable: []string{filepath.Join(s.opts.StateDir, "bundles")}}},
		{"a relative path", envbuild.BuildView{Writable: []string{"envs"}}},
		{"/proc", envbuild.BuildView{ReadOnly: []string{"/proc/1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.spec("b-1", tc.view); !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("spec = %v, want ErrInvalidSpec", err)
			}
		})
	}
}

// runStep runs argv in the session and returns its output lines.
func runStep(t *testing.T, s envbuild.BuildSession, ctx context.Context, argv ...string) ([]string, error) {
	t.Helper()
	var out []string
	err := s.Run(ctx, "/", argv, func(l string) { out = append(out, l) })
	return out, err
}

func TestBuildSandboxSession(t *testing.T) {
	requireRuntime(t, KindRunc)
	data := t.TempDir()
	own := filepath.Join(data, "envs", "tmp", "b1")
	other := filepath.Join(data, "envs", "envs", "other")
	for _, d := range []string{own, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(other, "site.py"), []byte("ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "state.db"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	sb := testBuildSandbox(t, data)
	ctx := context.Background()
	s, err := sb.Open(ctx, envbuild.BuildView{
		ID:       "b1",
		Writable: []string{filepath.Join(data, "envs")},
		Hidden:   []string{filepath.Join(data, "envs", "envs")},
		Owned:    []string{own},
		Env:      []string{"PATH=/usr/bin:/bin"},
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()

	out, err := runStep(t, s, ctx, "/bin/sh", "-c", `id -u; echo to-stderr >&2; printf 'no newline'; exit 3`)
	var exit interface{ ExitCode() int }
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("Run = %v, want exit status 3", err)
	}
	if len(out) != 3 || out[0] == "0" || out[1] != "to-stderr" || out[2] != "no newline" {
		t.Errorf("output %q, want a non-root uid, stderr and the unterminated line", out)
	}

	for _, tc := range []struct {
		name, script string
		ok           bool
	}{
		{"write its own directory", "echo x > " + own + "/f", true},
		{"read state.db", "cat " + filepath.Join(data, "state.db"), false},
		{"see a hidden environment", "cat " + filepath.Join(other, "site.py"), false},
		{"write beside its own directory", "echo x > " + filepath.Join(data, "envs", "tmp", "planted"), false},
		{"write the host's system directories", "echo x > /usr/planted", false},
		{"make a user namespace", "unshare -Ur true", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runStep(t, s, ctx, "/bin/sh", "-c", tc.script)
			if (err == nil) != tc.ok {
				t.Errorf("%s: err %v (output %q), want ok=%v", tc.script, err, out, tc.ok)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(data, "envs", "tmp", "planted")); err == nil {
		t.Error("a file was planted beside the build's directory")
	}

	// Cancelling a step ends the session and everything in it at once.
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = runStep(t, s, cctx, "/bin/sh", "-c", "setsid sleep 300 & sleep 300")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 20*time.Second {
		t.Errorf("cancelled step = %v after %v, want DeadlineExceeded soon", err, time.Since(start))
	}
	if _, err := runStep(t, s, ctx, "/bin/true"); err == nil || !strings.Contains(err.Error(), "ended") {
		t.Errorf("a step after cancellation = %v, want the session's end", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if entries, _ := os.ReadDir(sb.bundles); len(entries) != 0 {
		t.Errorf("bundles left: %v", entries)
	}
	cs, err := sb.rt.List(ctx)
	if err != nil || len(cs) != 0 {
		t.Errorf("containers left: %v, %v", cs, err)
	}
}
