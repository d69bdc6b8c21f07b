package main

import (
	"context"

	"github.com/spf13/cobra"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

func newLogsCommand() *cobra.Command {
	var client clientFlags
	cmd := &cobra.Command{
		Use:   "logs RUN_ID",
		Short: "Print a run's output",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return client.withAdmin(cmd, func(ctx context.Context, admin atollv1.AdminClient, _ string) error {
				resp, err := admin.GetRunLogs(ctx, &atollv1.GetRunLogsRequest{RunId: args[0]})
				if err != nil {
					return err
				}
				for _, l := range resp.GetLines() {
					out := cmd.OutOrStdout()
					if l.GetStream() != atollv1.Stream_STREAM_STDOUT {
						out = cmd.ErrOrStderr()
					}
					if _, err := out.Write(l.GetData()); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&client.host, "host", "", hostFlagHelp)
	return cmd
}
