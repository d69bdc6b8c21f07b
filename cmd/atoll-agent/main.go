// Command atoll-agent is the worker agent alone (`atoll-agent worker`, the
// same command as `atoll worker`), for the local launcher to run in each
// worker. Built without the server, the CLI and their libraries, it starts
// in a tenth of the time (no package initialisation of gRPC servers,
// Kubernetes clients and the like: about 2 ms instead of 17) and stays
// resident in a third of the memory. The server uses it when it lies
// beside its own binary, from the same build (see sandbox.AgentBinary),
// and runs itself as the agent otherwise. It is the only place that exits
// this process.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/workercmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := &cobra.Command{
		Use:           "atoll-agent",
		Short:         "The atoll worker agent, which the server starts in each worker",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(workercmd.New())
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		if exit, ok := errors.AsType[workercmd.ExitError](err); ok {
			os.Exit(exit.Code)
		}
		fmt.Fprintln(os.Stderr, "atoll-agent:", err)
		os.Exit(1)
	}
}
