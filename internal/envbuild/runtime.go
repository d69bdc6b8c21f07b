package envbuild

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// runtimeMeta is the completion marker of a runtime directory.
type runtimeMeta struct {
	Key           string    `json:"key"`
	Python        string    `json:"python"`
	PythonVersion string    `json:"python_version"`
	Requirements  []string  `json:"requirements"`
	UVVersion     string    `json:"uv_version"`
	Created       time.Time `json:"created"`
}

// Runtime returns a directory holding Options.RuntimeRequirements for the
// Python major.minor python, for the worker to append to sys.path (so a
// user's own pin of, say, cloudpickle wins). It is built once per Python
// version, requirements and uv version, atomically like a venv, and is
// never pruned. Build output goes to logf.
func (b *Builder) Runtime(ctx context.Context, python string, logf func(string)) (dir string, err error) {
	py, err := normalizePython(python)
	if err != nil {
		return "", err
	}
	key := runtimeKey(py, b.runtimeReqs, b.uvVersion)
	dir = filepath.Join(b.runtimeDir, key)
	if runtimeReady(dir) {
		return dir, nil
	}
	err = b.join(ctx, "runtime:"+key, logf, func(ctx context.Context, logf func(string)) error {
		return b.buildRuntime(ctx, key, py, logf)
	})
	if err != nil {
		return "", err
	}
	if !runtimeReady(dir) {
		return "", fmt.Errorf("envbuild: runtime %s missing after build", key)
	}
	return dir, nil
}

func runtimeReady(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, runtimeMarker))
	return err == nil
}

func (b *Builder) buildRuntime(ctx context.Context, key, python string, logf func(string)) (err error) {
	lk, err := lockFile(ctx, b.lockPath(key), lockExclusive)
	if err != nil {
		return fmt.Errorf("envbuild: lock runtime %s: %w", key, err)
	}
	defer lk.unlock()
	final := filepath.Join(b.runtimeDir, key)
	if runtimeReady(final) {
		return nil
	}
	py, err := b.interpreter(ctx, python)
	if err != nil {
		return err
	}
	start := time.Now()
	name := tmpName(key)
	tmp := filepath.Join(b.tmpDir, name)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("envbuild: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if len(b.runtimeReqs) > 0 {
		// Compiled always: every cold start imports these, usually from a
		// read-only mount where Python cannot cache bytecode.
		args := []string{"pip", "install", "--target", name, "--python", py.Executable, "--compile-bytecode"}
		if err := b.install(ctx, logf, args, b.runtimeReqs); err != nil {
			return err
		}
	}
	meta := runtimeMeta{
		Key:           key,
		Python:        python,
		PythonVersion: py.Version,
		Requirements:  b.runtimeReqs,
		UVVersion:     b.uvVersion,
		Created:       time.Now().UTC(),
	}
	if err := writeMarker(filepath.Join(tmp, runtimeMarker), meta); err != nil {
		return err
	}
	if err := b.replace(tmp, final); err != nil {
		return err
	}
	b.log.Info("built runtime", "runtime", key, "python", py.Version, "requirements", b.runtimeReqs, "took", time.Since(start))
	return nil
}
