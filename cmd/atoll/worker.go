package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/worker"
)

func newWorkerCommand() *cobra.Command {
	var opts worker.Options
	cmd := &cobra.Command{
		Use:    "worker",
		Short:  "Run the in-sandbox worker agent (started by the server)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.In, opts.Out = os.Stdin, os.Stdout
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "worker")
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
	_ = cmd.MarkFlagRequired("sdk")
	return cmd
}
