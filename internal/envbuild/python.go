package envbuild

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// interpreter is a base (non-venv) CPython found on the host.
type interpreter struct {
	Executable string `json:"executable"`
	Version    string `json:"version"` // full, e.g. "3.11.7"
	BasePrefix string `json:"base_prefix"`
}

// probeScript reports what the builder needs to know about an interpreter.
const probeScript = `import json, sys
print(json.dumps({"executable": sys.executable, "version": "%d.%d.%d" % sys.version_info[:3], "base_prefix": sys.base_prefix}))`

// interpreter finds the host's CPython for major.minor version want. Found
// interpreters are remembered, in this process and in Root/host.json for
// the next (hostfacts.go); a miss is not, so a Python installed later is
// picked up without a restart.
func (b *Builder) interpreter(ctx context.Context, want string) (interpreter, error) {
	b.mu.Lock()
	py, ok := b.pythons[want]
	b.mu.Unlock()
	if ok {
		if _, err := os.Stat(py.Executable); err == nil {
			return py, nil
		}
	}
	if py, ok := b.facts.python(want); ok {
		b.mu.Lock()
		b.pythons[want] = py
		b.mu.Unlock()
		return py, nil
	}

	// CPython only: code pickled by value by a CPython caller does not load
	// elsewhere. --system skips virtual environments.
	stdout, _, err := b.uvOutput(ctx, "python", "find", "--system", "--no-project", "--no-config", "cpython@"+want)
	path := strings.TrimSpace(stdout)
	if err != nil || path == "" {
		if ctx.Err() != nil {
			return interpreter{}, fmt.Errorf("envbuild: find python %s: %w", want, context.Cause(ctx))
		}
		avail, lerr := b.availablePythons(ctx)
		if lerr != nil {
			b.log.Warn("listing installed pythons failed", "err", lerr)
		}
		return interpreter{}, &PythonUnavailableError{Requested: want, Available: avail}
	}

	cmd := exec.CommandContext(ctx, path, "-I", "-S", "-c", probeScript)
	cmd.Dir = b.root
	out, err := cmd.Output()
	if err != nil {
		return interpreter{}, fmt.Errorf("envbuild: probe python %s at %s: %w", want, path, err)
	}
	if err := json.Unmarshal(out, &py); err != nil {
		return interpreter{}, fmt.Errorf("envbuild: probe python %s at %s: %w", want, path, err)
	}
	if py.Executable == "" {
		py.Executable = path
	}
	if majorMinor(py.Version) != want {
		return interpreter{}, fmt.Errorf("envbuild: uv found %s for python %s but it is %s", path, want, py.Version)
	}
	b.mu.Lock()
	b.pythons[want] = py
	b.mu.Unlock()
	b.facts.setPython(want, py)
	b.log.Info("found python", "version", py.Version, "path", py.Executable)
	return py, nil
}

// forgetInterpreter drops a remembered interpreter after it failed to build
// a venv (it may have been removed or upgraded).
func (b *Builder) forgetInterpreter(want string) {
	b.mu.Lock()
	delete(b.pythons, want)
	b.mu.Unlock()
	b.facts.forgetPython(want)
}

// availableTTL is how long a listing of installed Pythons is reused: uv's
// search can take seconds (it runs every python on PATH, shims included).
const availableTTL = 30 * time.Second

// availablePythons lists the major.minor versions of the installed CPython
// interpreters uv can use, ascending.
func (b *Builder) availablePythons(ctx context.Context) ([]string, error) {
	b.mu.Lock()
	cached, at := b.available, b.availableAt
	b.mu.Unlock()
	if !at.IsZero() && time.Since(at) < availableTTL {
		return cached, nil
	}
	stdout, stderr, err := b.uvOutput(ctx, "python", "list", "--only-installed", "--output-format", "json", "--no-config")
	if err != nil {
		return nil, fmt.Errorf("uv python list: %w: %s", err, strings.TrimSpace(stderr))
	}
	var found []struct {
		Version        string `json:"version"`
		Implementation string `json:"implementation"`
		Variant        string `json:"variant"`
	}
	if err := json.Unmarshal([]byte(stdout), &found); err != nil {
		return nil, fmt.Errorf("uv python list: %w", err)
	}
	var versions []string
	for _, f := range found {
		if !strings.EqualFold(f.Implementation, "cpython") || (f.Variant != "" && f.Variant != "default") {
			continue
		}
		if mm := majorMinor(f.Version); mm != "" {
			versions = append(versions, mm)
		}
	}
	slices.SortFunc(versions, compareVersions)
	versions = slices.Compact(versions)
	b.mu.Lock()
	b.available, b.availableAt = versions, time.Now()
	b.mu.Unlock()
	return versions, nil
}

// majorMinor returns "3.11" for "3.11.7" (or "3.11.0rc1"), "" if malformed.
func majorMinor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return ""
	}
	minor := parts[1]
	if i := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = minor[:i]
	}
	if _, err := strconv.Atoi(parts[0]); err != nil || minor == "" {
		return ""
	}
	return parts[0] + "." + minor
}

func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x - y
		}
	}
	return len(as) - len(bs)
}
