package serverapp

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/atoll-dev/atoll/internal/sandbox"
	"github.com/atoll-dev/atoll/internal/scheduler"
)

// launcher is the worker launcher chosen, its kind, and the warning that
// workers are not isolated ("" when they are).
type launcher struct {
	scheduler.Launcher
	Kind    string
	Warning string
}

// startLauncher picks the worker launcher: the requested or detected OCI
// runtime, proven by running a trivial container, else plain processes with
// a warning that workers are not isolated.
func (a *app) startLauncher(ctx context.Context) error {
	log := a.log.With("component", "sandbox")
	stateDir := filepath.Join(a.dataDir, "sandbox")
	want := a.cfg.Sandbox
	kind, warning, err := sandbox.Detect(want)
	if err != nil {
		return fmt.Errorf("--sandbox: %w", err)
	}
	if kind != sandbox.KindProcess {
		oci, err := sandbox.NewOCI(sandbox.OCIOptions{
			Runtime:   kind,
			StateDir:  stateDir,
			Protected: []string{a.dataDir},
			Network:   a.cfg.Network,
			Stderr:    os.Stderr,
			Logger:    log,
		})
		if err == nil {
			err = oci.RemoveStale(ctx)
		}
		if err == nil {
			err = oci.Check(ctx)
		}
		if err == nil {
			a.launcher = launcher{Launcher: oci, Kind: kind, Warning: warning}
			a.warnUnisolated()
			return nil
		}
		if want != "" && want != "auto" {
			return fmt.Errorf("--sandbox %s does not work on this host: %w", want, err)
		}
		warning = fmt.Sprintf("the %s sandbox does not work here (%v); workers run as plain processes and are NOT isolated from the server or each other", kind, err)
		kind = sandbox.KindProcess
	}
	a.launcher = launcher{
		Launcher: sandbox.NewProcess(sandbox.ProcessOptions{StateDir: stateDir, Stderr: os.Stderr, Logger: log}),
		Kind:     kind, Warning: warning,
	}
	a.warnUnisolated()
	return nil
}

func (a *app) warnUnisolated() {
	if a.launcher.Warning != "" {
		a.log.Warn(a.launcher.Warning, "sandbox", a.launcher.Kind)
	}
}
