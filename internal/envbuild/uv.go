package envbuild

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"strings"
	"time"
)

// findUV resolves the uv binary: the configured path or name, else "uv" on
// PATH.
func findUV(configured string) (string, error) {
	name := configured
	if name == "" {
		name = "uv"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("envbuild: %w: %q is not an executable on PATH; install it with `pip install uv` (or configure its path)", ErrUVNotFound, name)
	}
	return p, nil
}

// isScript reports whether path is a "#!" script, such as a pyenv shim.
func isScript(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [2]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == "#!"
}

// uvEnvOverrides are variables the builder sets itself, and variables from
// the server's environment that would point uv at another environment,
// interpreter or cache. Index, proxy and TLS settings pass through, so a
// mirror configured for the server is used for builds.
var uvEnvOverrides = map[string]bool{
	"VIRTUAL_ENV": true, "CONDA_PREFIX": true, "PYTHONHOME": true, "PYTHONPATH": true,
	"UV": true, "UV_CACHE_DIR": true, "UV_NO_CACHE": true, "UV_OFFLINE": true,
	"UV_PYTHON": true, "UV_PYTHON_DOWNLOADS": true, "UV_PYTHON_PREFERENCE": true,
	"UV_MANAGED_PYTHON": true, "UV_NO_MANAGED_PYTHON": true, "UV_SYSTEM_PYTHON": true,
	"UV_BREAK_SYSTEM_PACKAGES": true, "UV_LINK_MODE": true, "UV_COMPILE_BYTECODE": true,
	"UV_NO_PROGRESS": true, "UV_VENV_SEED": true, "UV_VENV_CLEAR": true,
	"UV_VENV_RELOCATABLE": true, "UV_PROJECT": true, "UV_PROJECT_ENVIRONMENT": true,
	"UV_WORKING_DIR": true, "UV_NO_PROJECT": true,
}

// uvEnviron is uv's environment with cache cacheDir and link mode
// linkMode; extra ("KEY=value") replaces what the server's environment
// has of the same names.
func uvEnviron(cacheDir, linkMode string, extra ...string) []string {
	skip := maps.Clone(uvEnvOverrides)
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		skip[k] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !skip[k] {
			env = append(env, kv)
		}
	}
	env = append(env, extra...)
	return append(env,
		"UV_CACHE_DIR="+cacheDir,
		// Never fetch interpreters: only what the host has (system
		// interpreters first). Packages are the only network traffic.
		"UV_PYTHON_DOWNLOADS=never",
		"UV_PYTHON_PREFERENCE=system",
		"UV_LINK_MODE="+linkMode,
		"UV_NO_PROGRESS=1",
		"NO_COLOR=1",
	)
}

// resolveScriptUV asks uv where its real binary is. Wrappers such as pyenv
// shims cost ~200 ms per call, several times per build; uv exports its own
// path as $UV to the processes it runs.
func (b *Builder) resolveScriptUV(ctx context.Context) string {
	stdout, _, err := b.uvOutput(ctx, "run", "--no-project", "--no-config", "--quiet", "printenv", "UV")
	if err != nil {
		return ""
	}
	p := strings.TrimSpace(stdout)
	if p == "" || isScript(p) {
		return ""
	}
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// uvOutput runs a short uv query and returns its output.
func (b *Builder) uvOutput(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	b.countUV(args)
	cmd := exec.CommandContext(ctx, b.uv, args...)
	cmd.Dir = b.root
	cmd.Env = b.uvEnv
	configureProcess(cmd)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func (b *Builder) countUV(args []string) {
	b.uvCalls.Add(1)
	if b.uvHook != nil {
		b.uvHook(args)
	}
}

// maxOutputLines bounds how much of a uv run is kept for an error message.
const maxOutputLines = 200

// runUV runs uv in dir in session s, handing each line of its merged
// stdout and stderr to logf as it appears, and returns the last lines of
// that output.
func (b *Builder) runUV(ctx context.Context, s BuildSession, dir string, logf func(string), args ...string) (string, error) {
	b.countUV(args)
	return runStep(ctx, s, dir, logf, append([]string{b.uv}, args...))
}

// runStep runs argv in session s and returns the last lines of its output.
func runStep(ctx context.Context, s BuildSession, dir string, logf func(string), argv []string) (string, error) {
	var tail []string
	err := s.Run(ctx, dir, argv, func(line string) {
		if logf != nil {
			logf(line)
		}
		tail = append(tail, line)
		if len(tail) > 2*maxOutputLines {
			tail = append(tail[:0], tail[len(tail)-maxOutputLines:]...)
		}
	})
	if len(tail) > maxOutputLines {
		tail = tail[len(tail)-maxOutputLines:]
	}
	return strings.Join(tail, "\n"), err
}

// plainSession runs steps as plain children of this process, with its
// privileges: what a Builder without a Sandbox does.
type plainSession struct{ env []string }

func (p plainSession) Close() error { return nil }

func (p plainSession) Run(ctx context.Context, dir string, argv []string, out func(string)) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = p.env
	cmd.WaitDelay = 5 * time.Second
	configureProcess(cmd)

	// One pipe for both streams keeps uv's lines in the order it wrote them.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return err
	}
	pw.Close()
	// A grandchild that escaped the process group could hold the pipe open
	// after uv is killed; give up reading a little after cancellation.
	stop := context.AfterFunc(ctx, func() { pr.SetReadDeadline(time.Now().Add(5 * time.Second)) })

	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		out(strings.TrimRight(sc.Text(), "\r"))
	}
	if sc.Err() != nil {
		io.Copy(io.Discard, pr)
	}
	stop()
	pr.Close()
	return cmd.Wait()
}

// stepError turns a failed uv step into the caller's error: cancellation
// stays cancellation, anything else is a *BuildError with uv's text.
func stepError(ctx context.Context, step, output string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("envbuild: %s: %w", step, context.Cause(ctx))
	}
	var exit interface{ ExitCode() int }
	if !errors.As(err, &exit) {
		// uv did not run at all: not the user's requirements' fault.
		return fmt.Errorf("envbuild: %s: %w", step, err)
	}
	return &BuildError{Step: step, Output: uvErrorText(output), Err: err}
}

// uvErrorText keeps uv's diagnosis: from its first "error:" line on, or the
// last lines when it printed none.
func uvErrorText(output string) string {
	lines := strings.Split(strings.TrimSpace(output), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "error:") {
			return strings.TrimSpace(strings.Join(lines[i:], "\n"))
		}
	}
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
