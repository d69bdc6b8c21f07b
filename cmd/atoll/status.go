package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

func newStatusCommand() *cobra.Command {
	var client clientFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Describe the server: sandbox, capacity, machine types",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return printStatus(cmd, client)
		},
	}
	cmd.Flags().StringVar(&client.host, "host", "", hostFlagHelp)
	return cmd
}

func printStatus(cmd *cobra.Command, client clientFlags) error {
	return client.withAdmin(cmd, func(ctx context.Context, admin atollv1.AdminClient, target string) error {
		st, err := admin.Status(ctx, &atollv1.StatusRequest{})
		if err != nil {
			return err
		}
		return writeStatus(cmd, target, st)
	})
}

func writeStatus(cmd *cobra.Command, target string, st *atollv1.StatusResponse) error {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "server:   %s (atoll %s)\naccount:  %s\nsandbox:  %s\n", target, st.GetVersion(), st.GetAccount(), st.GetSandbox())
	if w := st.GetSandboxWarning(); w != "" {
		fmt.Fprintf(out, "WARNING:  %s\n", w)
	}
	fmt.Fprintf(out, "capacity: %s\nin use:   %s (%d calls waiting)\nmachine types:\n", st.GetCapacity(), st.GetUsed(), st.GetWaiting())
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, t := range st.GetMachineTypes() {
		gpus := "-"
		if t.GetGpus() > 0 {
			gpus = fmt.Sprintf("%d×%s", t.GetGpus(), firstNonEmpty(t.GetGpuModel(), "any"))
		}
		fmt.Fprintf(tw, "  %s\t%g CPU\t%d MiB\t%s\n", t.GetName(), t.GetCpus(), t.GetMemoryBytes()>>20, gpus)
	}
	return tw.Flush()
}
