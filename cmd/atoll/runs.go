package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

func newRunsCommand() *cobra.Command {
	var client clientFlags
	var limit int
	cmd := &cobra.Command{
		Use:   "runs",
		Short: "List your recent runs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return client.withAdmin(cmd, func(ctx context.Context, admin atollv1.AdminClient, _ string) error {
				resp, err := admin.ListRuns(ctx, &atollv1.ListRunsRequest{Limit: int32(limit)})
				if err != nil {
					return err
				}
				return printRuns(cmd, resp.GetRuns())
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "at most this many runs")
	cmd.Flags().StringVar(&client.host, "host", "", hostFlagHelp)
	return cmd
}

func printRuns(cmd *cobra.Command, runs []*atollv1.RunInfo) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tFUNCTION\tTYPE\tQUEUED\tDURATION\tOUTCOME\tEXIT")
	for _, r := range runs {
		exit := "-"
		if r.ExitStatus != nil {
			exit = fmt.Sprint(r.GetExitStatus())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.GetId(), r.GetFunctionName(), r.GetMachineType(),
			when(msTime(r.GetQueuedUnixMs())), duration(r), runState(r), exit)
	}
	return tw.Flush()
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func duration(r *atollv1.RunInfo) string {
	if r.GetStartedUnixMs() == 0 || r.GetFinishedUnixMs() == 0 {
		return "-"
	}
	return (time.Duration(r.GetFinishedUnixMs()-r.GetStartedUnixMs()) * time.Millisecond).String()
}

// runState is a run's outcome, or where an unfinished run stands: queued
// (waiting for a worker) or running.
func runState(r *atollv1.RunInfo) string {
	switch {
	case r.GetOutcome() != "":
		return r.GetOutcome()
	case r.GetStartedUnixMs() == 0:
		return "queued"
	}
	return "running"
}
