package envbuild

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// With a Sandbox, a build never lets code that a package supplies touch
// the shared uv cache, because uv hard-links cached files into venvs: a
// build backend that could write the cache (or a file linked from it)
// could plant code in every environment that installs the same wheel,
// whichever account asked for it. So a build has two phases, each a
// separate sandbox session:
//
//  1. Wheels (trusted). uv alone, with --no-build, installs the
//     requirements and pip into a fresh venv, hard-linking from the shared
//     cache, which this session may write (it downloads into it). No
//     package code runs: wheels install by unpacking, and the only Python
//     uv starts is the venv's own interpreter before anything is
//     installed. Bytecode is compiled afterwards by the base interpreter
//     with -I -S (no site: a wheel's .pth file does not run); uv's own
//     --compile-bytecode would start the venv's Python with site, running
//     the .pth files of what it just installed.
//  2. Source (isolated), only if phase 1 failed and builds are allowed:
//     phase 1's venv is thrown away (its files are the cache's inodes)
//     and a new one is built with a private, empty uv cache in the
//     build's scratch directory, copying rather than linking. This
//     session sees nothing of Root but its own two directories, so a
//     setup.py can change only the environment it was asked to build.
//
// Either way the session sees neither the server's data directory nor
// other environments, and runs as the sandbox's unprivileged user.

// installSandboxed builds the venv for key under tmp/ in the two phases
// and returns its name there; on failure nothing of it is left. The venv
// is complete when it returns, but its session may still be ending: ended
// returns once it has, and must be called before the venv is moved where
// workers find it.
func (b *Builder) installSandboxed(ctx context.Context, key string, spec Spec, py interpreter, logf func(string)) (name string, ended func(), err error) {
	name = tmpName(key)
	ended, err = b.installWheels(ctx, name, spec, py, logf)
	if err == nil {
		return name, ended, nil
	}
	os.RemoveAll(filepath.Join(b.tmpDir, name))
	if ctx.Err() != nil || b.noBuild || !errors.Is(err, ErrBuildFailed) {
		return "", nil, err
	}
	b.log.Debug("wheels alone cannot satisfy the requirements; building from source in isolation", "env", key, "err", err)
	if logf != nil {
		logf(sourceBuildNotice)
	}
	name = tmpName(key)
	if err := b.installFromSource(ctx, name, spec, py, logf); err != nil {
		os.RemoveAll(filepath.Join(b.tmpDir, name))
		os.RemoveAll(filepath.Join(b.tmpDir, name+scratchSuffix))
		return "", nil, err
	}
	os.RemoveAll(filepath.Join(b.tmpDir, name+scratchSuffix))
	return name, func() {}, nil
}

// sourceBuildNotice tells the caller, after uv's complaint that building is
// disabled, why the build starts again.
const sourceBuildNotice = "Wheels alone cannot satisfy the requirements: building again, from source, in a sandbox of its own"

// scratchSuffix names a source build's scratch directory beside its venv
// in tmp/: its private uv cache and temporary files.
const scratchSuffix = ".scratch"

// trustedView is a session that may write the shared cache: Root is
// mounted whole, so that uv can hard-link from the cache into the build's
// directory (links cannot cross mounts), with every other environment
// hidden. Its user owns only the cache and the build's own directories.
func (b *Builder) trustedView(id string, owned []string, readOnly []string) BuildView {
	v := BuildView{
		ID:        id,
		Writable:  []string{b.root},
		Hidden:    []string{b.envsDir, b.runtimeDir, b.trashDir, b.locksDir, b.templatesDir},
		Owned:     append([]string{b.cacheDir}, owned...),
		Recursive: []string{b.cacheDir},
		ReadOnly:  readOnly,
		Env:       b.uvEnv,
	}
	if !isUnder(b.cacheDir, b.root) {
		v.Writable = append(v.Writable, b.cacheDir)
	}
	return v
}

// installWheels is phase 1: uv, the shared cache and wheels only. Once
// the venv is complete, its session ends in the background (the builder
// meanwhile measures and marks the venv); ended waits for that.
func (b *Builder) installWheels(ctx context.Context, name string, spec Spec, py interpreter, logf func(string)) (ended func(), err error) {
	tmp := filepath.Join(b.tmpDir, name)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("envbuild: %w", err)
	}
	t := time.Now()
	view := b.trustedView(name, []string{tmp}, b.buildReadOnly(py, spec))
	fromTemplate := b.venvFromTemplate(py, tmp)
	if fromTemplate {
		view.Recursive = append(view.Recursive, tmp) // the copy is this process's user's
		b.logStep(name, "copy venv template", &t)
	}
	s, err := b.sandbox.Open(ctx, view)
	if err != nil {
		return nil, fmt.Errorf("envbuild: open build sandbox: %w", err)
	}
	b.logStep(name, "open sandbox", &t)
	if err := b.wheelSteps(ctx, s, name, spec, py, fromTemplate, logf, &t); err != nil {
		s.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		closing := time.Now()
		s.Close()
		b.logStep(name, "close sandbox (in the background)", &closing)
	}()
	return func() { <-done }, nil
}

// wheelSteps are phase 1's steps, in session s.
// The venv is made by uv unless it came from its template.
func (b *Builder) wheelSteps(ctx context.Context, s BuildSession, name string, spec Spec, py interpreter, fromTemplate bool, logf func(string), t *time.Time) error {
	if !fromTemplate {
		if out, err := b.runUV(ctx, s, b.tmpDir, venvLogf(logf), "venv", "--relocatable", "--no-project", "--no-config", "--allow-existing", "--python", py.Executable, name); err != nil {
			b.forgetInterpreter(spec.Python)
			return stepError(ctx, "uv venv", out, err)
		}
		b.saveTemplate(py, filepath.Join(b.tmpDir, name))
		b.logStep(name, "uv venv", t)
	}
	reqs := spec.Requirements
	if b.wantsPip(spec) {
		// In the same run: a second uv run would start the venv's Python,
		// site and all, with the user's packages installed.
		reqs = append(append([]string{}, reqs...), "pip")
	}
	if len(reqs) > 0 {
		args := []string{"pip", "install", "--python", filepath.Join(name, "bin", "python"), "--no-build"}
		if err := b.install(ctx, s, logf, args, reqs); err != nil {
			return err
		}
		b.logStep(name, "uv pip install", t)
	}
	if b.compileBytecode && len(spec.Requirements) > 0 {
		if err := b.compile(ctx, s, name, py); err != nil {
			return err
		}
		b.logStep(name, "compile bytecode", t)
	}
	return nil
}

// parallelCompileFiles is how many .py files make compiling them in
// parallel worth its worker processes' start.
const parallelCompileFiles = 300

// compile writes the bytecode of the venv tmp/name's packages, pip's
// excepted (compiling it would double a build's time), with the base
// interpreter isolated and without site, so that no .pth file runs; and
// shares it through the uv cache, so that the next venv linked the same
// wheel's files is linked their bytecode too (bytecode.go). When every
// file already has its bytecode that way, nothing runs.
func (b *Builder) compile(ctx context.Context, s BuildSession, name string, py interpreter) error {
	sites, _ := filepath.Glob(filepath.Join(b.tmpDir, name, "lib", "python*", "site-packages"))
	tag := cacheTag(py.Version)
	for _, site := range sites {
		var targets []string
		files, stale := 0, 0
		entries, err := os.ReadDir(site)
		if err != nil {
			return fmt.Errorf("envbuild: %w", err)
		}
		for _, e := range entries {
			if n := e.Name(); n == "pip" || strings.HasPrefix(n, "pip-") || strings.HasSuffix(n, ".dist-info") || n == "__pycache__" {
				continue
			}
			p := filepath.Join(site, e.Name())
			filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return nil
				}
				if d.IsDir() && d.Name() == "__pycache__" {
					return filepath.SkipDir
				}
				if d.Type().IsRegular() && strings.HasSuffix(d.Name(), ".py") {
					files++
					if !bytecodeCurrent(path, tag) {
						stale++
					}
				}
				return nil
			})
			rel, _ := filepath.Rel(b.tmpDir, p)
			targets = append(targets, rel)
		}
		if stale == 0 {
			b.log.Debug("bytecode linked from the cache", "build", name, "files", files)
			continue
		}
		jobs := "1"
		if files >= parallelCompileFiles {
			jobs = "0" // one worker per CPU
		}
		relSite, _ := filepath.Rel(b.tmpDir, site)
		argv := append([]string{py.Executable, "-I", "-S", "-c", compileScript, jobs, filepath.Join(b.cacheDir, uvArchiveDir), relSite}, targets...)
		if out, err := runStep(ctx, s, b.tmpDir, nil, argv); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("envbuild: compile bytecode: %w", context.Cause(ctx))
			}
			// Packages ship files that do not compile (templates, other
			// Pythons' code); uv's own compiling ignores them too.
			b.log.Debug("some files did not compile", "env", name, "output", out)
		}
	}
	return nil
}

// installFromSource is phase 2: everything, build backends included, in a
// session that sees only the build's venv and scratch directory.
func (b *Builder) installFromSource(ctx context.Context, name string, spec Spec, py interpreter, logf func(string)) error {
	tmp := filepath.Join(b.tmpDir, name)
	scratch := tmp + scratchSuffix
	for _, d := range []string{tmp, scratch} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("envbuild: %w", err)
		}
	}
	s, err := b.sandbox.Open(ctx, BuildView{
		ID:       name,
		Writable: []string{tmp, scratch},
		Owned:    []string{tmp, scratch},
		ReadOnly: b.buildReadOnly(py, spec),
		// A private cache, copied from: nothing links to it once it is gone.
		Env: uvEnviron(filepath.Join(scratch, "cache"), "copy", "TMPDIR="+scratch),
	})
	if err != nil {
		return fmt.Errorf("envbuild: open build sandbox: %w", err)
	}
	defer s.Close()
	if out, err := b.runUV(ctx, s, b.tmpDir, venvLogf(logf), "venv", "--relocatable", "--no-project", "--no-config", "--allow-existing", "--python", py.Executable, name); err != nil {
		b.forgetInterpreter(spec.Python)
		return stepError(ctx, "uv venv", out, err)
	}
	python := filepath.Join(name, "bin", "python")
	args := []string{"pip", "install", "--python", python}
	if b.compileBytecode {
		args = append(args, "--compile-bytecode")
	}
	if out, err := b.runUV(ctx, s, b.tmpDir, logf, withRequirements(args, spec.Requirements)...); err != nil {
		return stepError(ctx, "uv pip install", out, err)
	}
	if b.wantsPip(spec) {
		if out, err := b.runUV(ctx, s, b.tmpDir, logf, "pip", "install", "--python", python, "--", "pip"); err != nil {
			return stepError(ctx, "uv pip install", out, err)
		}
	}
	return nil
}

// buildReadOnly is what a build session reads of the host besides the
// system directories: the interpreter, uv, and any local requirements.
func (b *Builder) buildReadOnly(py interpreter, spec Spec) []string {
	paths := []string{b.uv, py.Executable}
	if py.BasePrefix != "" {
		paths = append(paths, py.BasePrefix)
	}
	if real, err := filepath.EvalSymlinks(py.Executable); err == nil {
		paths = append(paths, real)
	}
	return append(paths, localPaths(spec.Requirements)...)
}

// localPaths are the existing absolute host paths that (allowed) local
// requirements name, which a build session must see to install them.
func localPaths(reqs []string) []string {
	var out []string
	for _, raw := range reqs {
		r, err := parseRequirement(raw)
		if err != nil || r.local == "" {
			continue
		}
		p := strings.TrimPrefix(r.url, "git+")
		if u, err := url.Parse(p); err == nil && u.Scheme == "file" {
			p = u.Path
		}
		if i := strings.IndexAny(p, "@#"); i > 0 && !filepath.IsAbs(p[:i]) {
			continue
		} else if i > 0 {
			if _, err := os.Stat(p); err != nil {
				p = p[:i] // a revision or fragment after the path
			}
		}
		if filepath.IsAbs(p) {
			if _, err := os.Stat(p); err == nil {
				out = append(out, filepath.Clean(p))
			}
		}
	}
	return out
}

// isUnder reports whether p is dir or inside it.
func isUnder(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
}
