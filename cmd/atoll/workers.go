package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

func newWorkersCommand() *cobra.Command {
	var client clientFlags
	cmd := &cobra.Command{
		Use:   "workers",
		Short: "List your live workers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return client.withAdmin(cmd, func(ctx context.Context, admin atollv1.AdminClient, _ string) error {
				resp, err := admin.ListWorkers(ctx, &atollv1.ListWorkersRequest{})
				if err != nil {
					return err
				}
				if err := printWorkers(cmd, resp.GetWorkers()); err != nil {
					return err
				}
				// Calls waiting for capacity have no worker yet; say so, or
				// a queue looks like idleness.
				st, err := admin.Status(ctx, &atollv1.StatusRequest{})
				if err == nil && st.GetWaiting() > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%d call(s) queued, waiting for capacity (in use: %s of %s)\n",
						st.GetWaiting(), st.GetUsed(), st.GetCapacity())
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&client.host, "host", "", hostFlagHelp)
	return cmd
}

func printWorkers(cmd *cobra.Command, workers []*atollv1.WorkerInfo) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tFUNCTION\tTYPE\tSTATE\tSTARTED\tLAST USED")
	for _, w := range workers {
		state := "busy"
		if w.GetIdle() {
			state = "idle"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", w.GetId(), w.GetFunctionName(), w.GetMachineType(), state,
			when(msTime(w.GetStartedUnixMs())), when(msTime(w.GetLastUsedUnixMs())))
	}
	return tw.Flush()
}
