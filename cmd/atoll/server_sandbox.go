package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/sandbox"
)

// newHostLauncher picks how workers run on this host: the requested or
// detected OCI runtime, proven by running a trivial container, else plain
// processes with a warning that workers are not isolated. It returns the
// kind it chose and that warning ("" when workers are sandboxed).
func newHostLauncher(ctx context.Context, want, network, stateDir, dataDir string, log *slog.Logger) (sandbox.HostLauncher, string, string, error) {
	kind, warning, err := sandbox.Detect(want)
	if err != nil {
		return nil, "", "", fmt.Errorf("--sandbox: %w", err)
	}
	if kind != sandbox.KindProcess {
		oci, err := sandbox.NewOCI(sandbox.OCIOptions{
			Runtime:   kind,
			StateDir:  stateDir,
			Protected: []string{dataDir},
			Network:   network,
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
			return oci, kind, warning, nil
		}
		if want != "" && want != "auto" {
			return nil, "", "", fmt.Errorf("--sandbox %s does not work on this host: %w", want, err)
		}
		warning = fmt.Sprintf("the %s sandbox does not work here (%v); workers run as plain processes and are NOT isolated from the server or each other", kind, err)
		kind = sandbox.KindProcess
	}
	return sandbox.NewProcess(sandbox.ProcessOptions{StateDir: stateDir, Stderr: os.Stderr, Logger: log}), kind, warning, nil
}

// loadMachines returns the machine catalog and the host's capacity: the
// specification's defaults and the detected host, as the config file (if
// any) amends them.
func loadMachines(ctx context.Context, configPath string) (machine.Catalog, *machine.Capacity, error) {
	var cfg machine.Config
	if configPath != "" {
		var err error
		if cfg, err = machine.LoadConfig(configPath); err != nil {
			return machine.Catalog{}, nil, err
		}
	}
	host, err := machine.DetectHost(ctx)
	if err != nil {
		return machine.Catalog{}, nil, fmt.Errorf("detect host: %w", err)
	}
	return cfg.Catalog(), machine.NewCapacity(cfg.Host(host)), nil
}
