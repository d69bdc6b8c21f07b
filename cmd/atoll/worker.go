package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/workercmd"
)

// newWorkerCommand is the worker agent (see package workercmd), with the
// init step of a worker pod beside it.
func newWorkerCommand() *cobra.Command {
	cmd := workercmd.New()
	run := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		err := run(cmd, args)
		if exit, ok := errors.AsType[workercmd.ExitError](err); ok {
			return exitError{code: exit.Code}
		}
		return err
	}
	cmd.AddCommand(newWorkerFetchCommand())
	return cmd
}
