package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

func newCancelCommand() *cobra.Command {
	var client clientFlags
	cmd := &cobra.Command{
		Use:   "cancel RUN_ID",
		Short: "Cancel one of your running or queued runs (its worker is killed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return client.withAdmin(cmd, func(ctx context.Context, admin atollv1.AdminClient, _ string) error {
				if _, err := admin.CancelRun(ctx, &atollv1.CancelRunRequest{RunId: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "cancelled %s\n", args[0])
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&client.host, "host", "", hostFlagHelp)
	return cmd
}
