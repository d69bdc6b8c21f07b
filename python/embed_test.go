package python

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestWriteSDKIsCompleteAndReused(t *testing.T) {
	root := t.TempDir()
	dir, err := WriteSDK(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"atoll/__init__.py", "atoll/_runner.py", "atoll/v1/atoll_pb2.py"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s missing: %v", f, err)
		}
	}
	again, err := WriteSDK(root)
	if err != nil || again != dir {
		t.Fatalf("second write = %q, %v; want the same directory %q", again, err, dir)
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 {
		t.Errorf("root holds %d entries, want just the SDK (no temporary leftovers)", len(entries))
	}
}

// The worker runtime must give workers what the SDK itself depends on
// (except uv, which builds environments and never runs in a worker).
func TestRuntimeInputMatchesTheSDKsDependencies(t *testing.T) {
	data, err := os.ReadFile("pyproject.toml")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?s)\ndependencies = \[(.*?)\]`).FindSubmatch(data)
	if block == nil {
		t.Fatal("no dependencies in pyproject.toml")
	}
	var deps []string
	for _, m := range regexp.MustCompile(`"([^"]+)"`).FindAllSubmatch(block[1], -1) {
		if !strings.HasPrefix(string(m[1]), "uv") {
			deps = append(deps, string(m[1]))
		}
	}
	want := slices.Sorted(slices.Values(requirementLines(RuntimeInput)))
	if got := slices.Sorted(slices.Values(deps)); !slices.Equal(got, want) {
		t.Errorf("pyproject.toml dependencies %q, runtime.in %q", got, want)
	}
}

// Every requirement of runtime.in is pinned, with hashes, in runtime.lock:
// a lock left behind by an edit of runtime.in fails here, not in a worker.
func TestRuntimeLockPinsEveryInputWithHashes(t *testing.T) {
	lock := string(RuntimeLock)
	for _, req := range requirementLines(RuntimeInput) {
		name := regexp.MustCompile(`^[A-Za-z0-9._-]+`).FindString(req)
		pin := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(strings.ToLower(name)) + `==\S+ \\\n\s+--hash=sha256:[0-9a-f]{64}`)
		if !pin.MatchString(lock) {
			t.Errorf("runtime.lock has no hashed pin of %s (from runtime.in %q); run scripts/lock.sh", name, req)
		}
	}
	if strings.Contains(lock, "-e ") || strings.Contains(lock, "file:") {
		t.Error("runtime.lock names a local path")
	}
}

func requirementLines(data []byte) []string {
	var reqs []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			reqs = append(reqs, line)
		}
	}
	return reqs
}
