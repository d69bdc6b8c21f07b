package envbuild

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

func (b *Builder) envDir(key string) string   { return filepath.Join(b.envsDir, key) }
func (b *Builder) lockPath(key string) string { return filepath.Join(b.locksDir, key+".lock") }

// tmpName is a fresh name for a build of key in tmp/; the key prefix lets a
// later start find the build's lock.
func tmpName(key string) string {
	var r [6]byte
	rand.Read(r[:])
	return key + "." + hex.EncodeToString(r[:])
}

// lookup returns the finished environment for key. A directory without a
// marker, or whose base interpreter has gone, is not one.
func (b *Builder) lookup(key string) (Env, envMeta, bool) {
	dir := b.envDir(key)
	meta, _, err := readMeta(filepath.Join(dir, envMarker))
	if err != nil || meta.Key != key {
		return Env{}, envMeta{}, false
	}
	python := filepath.Join(dir, "bin", "python")
	if _, err := os.Stat(python); err != nil {
		return Env{}, envMeta{}, false
	}
	return Env{Key: key, Dir: dir, Python: python, BasePrefix: meta.BasePrefix}, meta, true
}

func readMeta(path string) (envMeta, time.Time, error) {
	var meta envMeta
	f, err := os.Open(path)
	if err != nil {
		return meta, time.Time{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return meta, time.Time{}, err
	}
	if err := json.NewDecoder(f).Decode(&meta); err != nil {
		return meta, time.Time{}, err
	}
	return meta, fi.ModTime(), nil
}

// touch records a use of key: the marker's modification time is its last use.
func (b *Builder) touch(key string) {
	now := time.Now()
	if err := os.Chtimes(filepath.Join(b.envDir(key), envMarker), now, now); err != nil && !errors.Is(err, fs.ErrNotExist) {
		b.log.Warn("recording environment use failed", "env", key, "err", err)
	}
}

// buildEnv builds the venv for key in tmp/, then renames it into envs/. The
// venv is made relocatable (uv rewrites console-script shebangs and activate
// scripts to find their venv at run time), so the rename keeps it working.
// The key's exclusive lock serializes builders across processes.
func (b *Builder) buildEnv(ctx context.Context, key string, spec Spec, logf func(string)) (err error) {
	lk, err := lockFile(ctx, b.lockPath(key), lockExclusive)
	if err != nil {
		return fmt.Errorf("envbuild: lock %s: %w", key, err)
	}
	defer lk.unlock()
	if _, _, ok := b.lookup(key); ok {
		return nil // another process built it while we waited
	}
	t := time.Now()
	py, err := b.interpreter(ctx, spec.Python)
	if err != nil {
		return err
	}
	b.logStep(key, "find python", &t)

	start := time.Now()
	log := b.log.With("env", key)
	log.Info("building environment", "python", py.Version, "requirements", spec.Requirements, "sandboxed", b.sandbox != nil)
	var name string
	ended := func() {}
	if b.sandbox == nil {
		name = tmpName(key)
		err = b.installPlain(ctx, name, spec, py, logf)
	} else {
		var wait func()
		if name, wait, err = b.installSandboxed(ctx, key, spec, py, logf); wait != nil {
			ended = wait
		}
	}
	tmp := filepath.Join(b.tmpDir, name)
	defer func() {
		if err != nil {
			ended()
			if name != "" {
				os.RemoveAll(tmp)
			}
			log.Info("environment build failed", "err", err, "took", time.Since(start))
		}
		if b.onBuild != nil {
			b.onBuild(time.Since(start), err)
		}
	}()
	if err != nil {
		return err
	}

	t = time.Now()
	size, err := dirSize(tmp)
	if err != nil {
		return fmt.Errorf("envbuild: %w", err)
	}
	b.logStep(key, "measure size", &t)
	meta := envMeta{
		Key:           key,
		Python:        spec.Python,
		PythonVersion: py.Version,
		Interpreter:   py.Executable,
		BasePrefix:    py.BasePrefix,
		Requirements:  spec.Requirements,
		UVVersion:     b.uvVersion,
		Created:       time.Now().UTC(),
		SizeBytes:     size,
	}
	if err := writeMarker(filepath.Join(tmp, envMarker), meta); err != nil {
		return err
	}
	b.logStep(key, "write marker", &t)
	// Nothing of the build may still run once workers can find the venv.
	ended()
	b.logStep(key, "wait for the session's end", &t)
	if err := b.replace(tmp, b.envDir(key)); err != nil {
		return err
	}
	b.logStep(key, "move into place", &t)
	log.Info("built environment", "took", time.Since(start), "size", size)
	return nil
}

// venvLogf passes uv venv's output on, without its "Activate with: source
// <tmp path>" hint, which would be wrong once the venv is moved.
func venvLogf(logf func(string)) func(string) {
	return func(l string) {
		if logf != nil && !strings.HasPrefix(l, "Activate with:") {
			logf(l)
		}
	}
}

// installPlain builds the venv tmp/name as plain child processes.
// Relative paths, run from tmp/, keep Root out of what the user sees.
func (b *Builder) installPlain(ctx context.Context, name string, spec Spec, py interpreter, logf func(string)) error {
	s := plainSession{env: b.uvEnv}
	if out, err := b.runUV(ctx, s, b.tmpDir, venvLogf(logf), "venv", "--relocatable", "--no-project", "--no-config", "--python", py.Executable, name); err != nil {
		b.forgetInterpreter(spec.Python)
		return stepError(ctx, "uv venv", out, err)
	}
	python := filepath.Join(name, "bin", "python")
	if len(spec.Requirements) > 0 {
		args := []string{"pip", "install", "--python", python}
		if b.compileBytecode {
			args = append(args, "--compile-bytecode")
		}
		if b.noBuild {
			args = append(args, "--no-build")
		}
		if err := b.install(ctx, s, logf, args, spec.Requirements); err != nil {
			return err
		}
	}
	if b.wantsPip(spec) {
		// pip alone (it vendors its own needs), not uv's seed set, which
		// brings packages such as packaging that `pip freeze` would list;
		// and uncompiled, since compiling it would double a build's time.
		if err := b.install(ctx, s, logf, []string{"pip", "install", "--python", python}, []string{"pip"}); err != nil {
			return err
		}
	}
	return nil
}

// wantsPip reports whether pip is to be added to spec's venv.
func (b *Builder) wantsPip(spec Spec) bool {
	return b.seedPip && !slices.ContainsFunc(spec.Requirements, func(r string) bool { return requirementName(r) == "pip" })
}

// install runs `uv pip install ARGS -- REQS`. Unless ResolveOnline is set it
// first tries the uv cache alone: with a warm cache that skips the index
// round trips, most of a build's time. The offline attempt's output is shown
// only if it succeeds.
func (b *Builder) install(ctx context.Context, s BuildSession, logf func(string), args, reqs []string) error {
	if !b.resolveOnline {
		var lines []string
		offline := withRequirements(append(append([]string{}, args...), "--offline"), reqs)
		_, err := b.runUV(ctx, s, b.tmpDir, func(l string) { lines = append(lines, l) }, offline...)
		if err == nil {
			if logf != nil {
				for _, l := range lines {
					logf(l)
				}
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("envbuild: uv pip install: %w", context.Cause(ctx))
		}
		b.log.Debug("cache cannot satisfy requirements; asking the index", "requirements", reqs)
	}
	online := withRequirements(append([]string{}, args...), reqs)
	if out, err := b.runUV(ctx, s, b.tmpDir, logf, online...); err != nil {
		return stepError(ctx, "uv pip install", out, err)
	}
	return nil
}

// withRequirements ends a uv command line with reqs, after "--" so that none
// is read as an option.
func withRequirements(args, reqs []string) []string {
	if len(reqs) == 0 {
		return args
	}
	return append(append(args, "--"), reqs...)
}

func writeMarker(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("envbuild: marker: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("envbuild: marker: %w", err)
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("envbuild: marker: %w", err)
	}
	return nil
}

// replace renames the finished build tmp to final. Whatever sits at final
// (a stale or broken environment: the caller holds the key's lock and found
// no usable one) goes to the trash first.
func (b *Builder) replace(tmp, final string) error {
	if _, err := os.Lstat(final); err == nil {
		if err := b.discard(final); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("envbuild: %w", err)
	}
	return nil
}

// discard moves dir out of sight at once, then deletes it.
func (b *Builder) discard(dir string) error {
	trash := filepath.Join(b.trashDir, tmpName(filepath.Base(dir)))
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("envbuild: %w", err)
	}
	if err := os.RemoveAll(trash); err != nil {
		b.log.Warn("deleting environment failed", "path", trash, "err", err)
	}
	return nil
}

// remove deletes an environment unless it is in use or was used since in
// was listed. ok reports whether it was removed.
func (b *Builder) remove(in Info) (ok bool, err error) {
	if b.inUse(in.Key) > 0 {
		return false, nil
	}
	lockPath := b.lockPath(in.Key)
	lk, ok, err := tryLockFile(lockPath, lockExclusive)
	if err != nil || !ok {
		return false, err // held: in use, or being rebuilt
	}
	defer lk.unlock()
	if b.inUse(in.Key) > 0 {
		return false, nil
	}
	_, lastUsed, err := readMeta(filepath.Join(b.envDir(in.Key), envMarker))
	if err != nil || lastUsed.After(in.LastUsed) {
		return false, nil
	}
	if err := b.discard(b.envDir(in.Key)); err != nil {
		return false, err
	}
	// Deleted while held: anyone waiting on this inode notices and retries
	// on a fresh file (see tryLockFile).
	os.Remove(lockPath)
	return true, nil
}

// cleanup removes what interrupted builds and removals left: tmp/ entries
// whose key no process is building, trash/, and envs/ or runtime/
// directories without a completion marker.
func (b *Builder) cleanup() {
	// clean removes path under key's lock, if still abandoned once locked.
	clean := func(path, key string, abandoned func() bool) {
		lk, ok, err := tryLockFile(b.lockPath(key), lockExclusive)
		if err != nil || !ok {
			return // someone is building it right now
		}
		defer lk.unlock()
		if !abandoned() {
			return
		}
		if err := os.RemoveAll(path); err != nil {
			b.log.Warn("removing leftover failed", "path", path, "err", err)
			return
		}
		b.log.Info("removed leftover of an interrupted build", "path", path)
	}
	if entries, err := os.ReadDir(b.tmpDir); err == nil {
		for _, e := range entries {
			key, _, _ := strings.Cut(e.Name(), ".")
			clean(filepath.Join(b.tmpDir, e.Name()), key, func() bool { return true })
		}
	}
	b.cleanTemplates()
	if entries, err := os.ReadDir(b.trashDir); err == nil {
		for _, e := range entries {
			os.RemoveAll(filepath.Join(b.trashDir, e.Name()))
		}
	}
	for _, d := range []struct{ dir, marker string }{{b.envsDir, envMarker}, {b.runtimeDir, runtimeMarker}} {
		entries, err := os.ReadDir(d.dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			path := filepath.Join(d.dir, e.Name())
			noMarker := func() bool {
				_, err := os.Stat(filepath.Join(path, d.marker))
				return errors.Is(err, fs.ErrNotExist)
			}
			if noMarker() {
				clean(path, e.Name(), noMarker)
			}
		}
	}
}

// dirSize is the apparent size of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var size int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			size += fi.Size()
		}
		return nil
	})
	return size, err
}
