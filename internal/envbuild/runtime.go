package envbuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// runtimeMeta is the completion marker of a runtime directory.
type runtimeMeta struct {
	Key           string    `json:"key"`
	Python        string    `json:"python"`
	PythonVersion string    `json:"python_version"`
	LockSHA256    string    `json:"lock_sha256"`
	UVVersion     string    `json:"uv_version"`
	Created       time.Time `json:"created"`
}

// Runtime returns a directory holding Options.RuntimeLock's packages for the
// Python major.minor python, for the worker to append to sys.path (so a
// user's own pin of, say, cloudpickle wins). It is built once per Python
// version, requirements and uv version, atomically like a venv, and is
// never pruned. Build output goes to logf.
func (b *Builder) Runtime(ctx context.Context, python string, logf func(string)) (dir string, err error) {
	py, err := normalizePython(python)
	if err != nil {
		return "", err
	}
	key := runtimeKey(py, b.runtimeLock, b.uvVersion)
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
	if len(bytes.TrimSpace(b.runtimeLock)) > 0 {
		lock := filepath.Join(b.tmpDir, name+".lock")
		if err := os.WriteFile(lock, b.runtimeLock, 0o644); err != nil {
			return fmt.Errorf("envbuild: %w", err)
		}
		defer os.Remove(lock)
		// Compiled always: every cold start imports these, usually from a
		// read-only mount where Python cannot cache bytecode.
		args := []string{"pip", "install", "--target", name, "--python", py.Executable, "--compile-bytecode", "-r", lock}
		if lockIsHashed(b.runtimeLock) {
			// A hashed lock pins every dependency: nothing is resolved
			// beyond it, and every file is checked against its hash.
			args = append(args, "--require-hashes", "--no-deps")
		}
		// The lock is the server's own, so the session may write the
		// shared cache; it reads only the lock of all of tmp/.
		var s BuildSession = plainSession{env: b.uvEnv}
		if b.sandbox != nil {
			s, err = b.sandbox.Open(ctx, b.trustedView(name, []string{tmp}, b.buildReadOnly(py, Spec{})))
			if err != nil {
				return fmt.Errorf("envbuild: open build sandbox: %w", err)
			}
			defer s.Close()
		}
		if err := b.install(ctx, s, logf, args, nil); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(b.runtimeLock)
	meta := runtimeMeta{
		Key:           key,
		Python:        python,
		PythonVersion: py.Version,
		LockSHA256:    hex.EncodeToString(sum[:]),
		UVVersion:     b.uvVersion,
		Created:       time.Now().UTC(),
	}
	if err := writeMarker(filepath.Join(tmp, runtimeMarker), meta); err != nil {
		return err
	}
	if err := b.replace(tmp, final); err != nil {
		return err
	}
	b.log.Info("built runtime", "runtime", key, "python", py.Version, "lock_sha256", meta.LockSHA256, "took", time.Since(start))
	return nil
}

// lockIsHashed reports whether every requirement of a requirements file
// carries a hash (continuation lines joined, comments ignored).
func lockIsHashed(lock []byte) bool {
	joined := strings.ReplaceAll(string(lock), "\\\n", " ")
	found := false
	for _, line := range strings.Split(joined, "\n") {
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		if !strings.Contains(line, "--hash=") {
			return false
		}
		found = true
	}
	return found
}
