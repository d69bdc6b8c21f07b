// Command atoll is the atoll server, its worker agent and the CLI people use
// to manage them. It is the only place that exits the process.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		var exit exitError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		fmt.Fprintln(os.Stderr, "atoll:", err)
		os.Exit(1)
	}
}

// exitError asks main to exit with a code and print nothing more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "atoll",
		Short:         "Run Python functions in isolated, reusable environments",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newServerCommand(), newWorkerCommand(), newLocalCommand(),
		newKeysCommand(), newLoginCommand(), newEnvsCommand(), newDataCommand(),
		newRunsCommand(), newLogsCommand(), newWorkersCommand(), newStatusCommand(),
		newCancelCommand(), newSecretsCommand(), newBuildInitCommand(),
	)
	return root
}
