package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/sandbox"
)

// newBuildInitCommand is the first process of a build container (started
// by the server's build sandbox, never by people): it runs the build's
// steps and, when the server goes, ends with everything they started.
func newBuildInitCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "build-init",
		Short:  "Run an environment build's steps inside its sandbox (started by the server)",
		Hidden: true,
		Args:   cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			os.Exit(sandbox.BuildInit(os.Stdin, os.Stdout))
		},
	}
}
