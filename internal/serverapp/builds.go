package serverapp

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/sandbox"
)

// BuildSandboxDir is where, under the data directory, build containers'
// bundles and runtime state live.
const BuildSandboxDir = "build-sandbox"

// BuildSandbox is how environment builds run on this host, given the
// sandbox kind workers run with (a Detect result, proven or forced): in
// containers of that OCI runtime (runc for runsc, whose builds would gain
// little from gVisor and lose its network), or, with no runtime, as plain
// processes, which it returns as nil with a warning for the log: those
// run package build code with the server's privileges.
func BuildSandbox(dataDir, kind string, log *slog.Logger) (*sandbox.BuildSandbox, string, error) {
	const weak = "environment builds run as plain processes with the server's privileges: a package's build code (setup.py) can read and change the server's state and other environments"
	runtime := kind
	if kind == sandbox.KindRunsc {
		runtime = sandbox.KindRunc
		if _, err := exec.LookPath(runtime); err != nil {
			return nil, "sandbox runsc, but runc is not installed for builds: " + weak, nil
		}
	}
	if runtime != sandbox.KindRunc && runtime != sandbox.KindCrun {
		return nil, weak, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, "", fmt.Errorf("locate the atoll binary: %w", err)
	}
	dataDir, err = filepath.Abs(dataDir)
	if err != nil {
		return nil, "", err
	}
	sb, err := sandbox.NewBuildSandbox(sandbox.BuildOptions{
		Runtime:   runtime,
		StateDir:  filepath.Join(dataDir, BuildSandboxDir),
		Protected: []string{dataDir},
		InitPath:  self,
		Logger:    log,
	})
	if err != nil {
		return nil, "", err
	}
	return sb, "", nil
}

// openBuildSandbox gives the environment builder the sandbox of the
// workers' kind, once startLauncher has proven it.
func (a *app) openBuildSandbox(ctx context.Context, opts *envbuild.Options) error {
	sb, warning, err := BuildSandbox(a.dataDir, a.launcher.Kind, a.log.With("component", "build-sandbox"))
	if err != nil {
		return fmt.Errorf("build sandbox: %w", err)
	}
	if warning != "" {
		a.log.Warn(warning, "sandbox", a.launcher.Kind)
	}
	if sb != nil {
		// What builds of a killed server left; the server's start, not
		// every `atoll envs` run, pays for the look.
		if err := sb.RemoveStale(ctx); err != nil {
			a.log.Warn("removing stale build containers failed", "err", err)
		}
		opts.Sandbox = sb
	}
	return nil
}
