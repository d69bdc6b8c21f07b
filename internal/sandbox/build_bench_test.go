package sandbox

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/atoll-dev/atoll/internal/envbuild"
)

// BenchmarkWarmEnvironment builds a new environment of three small
// packages from a warm cache, with builds as plain processes and in the
// build sandbox, alternately (so that a busy host slows both alike), and
// reports each one's median. It needs root, runc, uv and, to warm the
// caches, the package index.
//
//	go test -run '^$' -bench WarmEnvironment -benchtime 15x ./internal/sandbox/
func BenchmarkWarmEnvironment(b *testing.B) {
	if _, err := exec.LookPath("uv"); err != nil {
		b.Skip("uv is not on PATH")
	}
	requireRuntimeB(b)
	spec := envbuild.Spec{Python: "3.11", Requirements: []string{"pyjokes", "cowsay", "six"}}
	open := func(sandboxed bool) *envbuild.Builder {
		opts := envbuild.Options{Root: filepath.Join(b.TempDir(), "envs"), CompileBytecode: true, SeedPip: true}
		if sandboxed {
			opts.Sandbox = testBuildSandboxB(b)
		}
		builder, err := envbuild.New(opts)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { builder.Close() })
		return builder
	}
	builders := map[string]*envbuild.Builder{"plain": open(false), "sandboxed": open(true)}
	build := func(builder *envbuild.Builder) time.Duration {
		if _, err := builder.Prune(0, 1); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := builder.Ensure(context.Background(), spec, nil); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	for _, builder := range builders {
		build(builder) // warm the cache
	}
	took := map[string][]time.Duration{}
	b.ResetTimer()
	for range b.N {
		for _, name := range []string{"plain", "sandboxed"} {
			took[name] = append(took[name], build(builders[name]))
		}
	}
	b.StopTimer()
	for name, d := range took {
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, name+"-p50-ms")
	}
}

func requireRuntimeB(b *testing.B) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("the build sandbox needs root")
	}
	if _, err := exec.LookPath(KindRunc); err != nil {
		b.Skip("runc is not installed")
	}
}

func testBuildSandboxB(b *testing.B) *BuildSandbox {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewBuildSandbox(BuildOptions{StateDir: filepath.Join(b.TempDir(), "state"), InitPath: exe})
	if err != nil {
		b.Fatal(err)
	}
	return s
}
