package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/worker"
)

func newWorkerCommand() *cobra.Command {
	var opts worker.Options
	var workDir string
	cmd := &cobra.Command{
		Use:    "worker",
		Short:  "Run the worker agent (started by the server, or by the host=local supervisor)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The agent only moves bytes between pipes: on one P its
			// goroutines hand calls to each other without waking threads,
			// which cost more CPU per call than the work itself.
			runtime.GOMAXPROCS(1)
			if workDir != "" {
				if err := os.Chdir(workDir); err != nil {
					return fmt.Errorf("--workdir: %w", err)
				}
			}
			opts.In, opts.Out = os.Stdin, os.Stdout
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("component", "worker")
			if err := worker.New(opts).Run(cmd.Context()); err != nil {
				return exitError{code: 1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Python, "python", "python3", "interpreter that runs the runner")
	f.StringVar(&opts.SDKDir, "sdk", "", "directory holding the atoll Python package")
	f.StringVar(&opts.RuntimeDir, "runtime", "", "directory holding the runner's own packages")
	f.StringVar(&workDir, "workdir", "", "directory the runner starts in (host=local: the caller's)")
	_ = cmd.MarkFlagRequired("sdk")
	return cmd
}
