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
func TestRuntimeRequirementsMatchTheSDKs(t *testing.T) {
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
	want := slices.Sorted(slices.Values(RuntimeRequirements))
	if got := slices.Sorted(slices.Values(deps)); !slices.Equal(got, want) {
		t.Errorf("pyproject.toml dependencies %q, RuntimeRequirements %q", got, want)
	}
}
