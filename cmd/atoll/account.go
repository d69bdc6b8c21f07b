package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

func newLoginCommand() *cobra.Command {
	var creds savedCredentials
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Save a server address and API key for the SDK and CLI",
		Long: "Saves the server address and API key to the credentials file (mode 0600), " +
			"where the SDK and the CLI find them when ATOLL_HOST, ATOLL_KEY_ID and ATOLL_KEY_SECRET are not set. " +
			"Values not given as flags are read from standard input.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := bufio.NewReader(cmd.InOrStdin())
			for _, field := range []struct {
				value  *string
				prompt string
			}{{&creds.KeyID, "key id"}, {&creds.KeySecret, "key secret"}} {
				if *field.value != "" {
					continue
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: ", field.prompt)
				line, err := in.ReadString('\n')
				if *field.value = strings.TrimSpace(line); *field.value == "" {
					if err == nil {
						err = errors.New("empty")
					}
					return fmt.Errorf("reading the %s: %w", field.prompt, err)
				}
			}
			path, err := saveCredentials(creds)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Saved credentials for %s to %s.\n", creds.Host, path)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&creds.Host, "host", firstNonEmpty(os.Getenv("ATOLL_HOST"), DefaultListen), "server address (host:port)")
	f.StringVar(&creds.KeyID, "key-id", "", "API key id")
	f.StringVar(&creds.KeySecret, "key-secret", "", "API key secret")
	f.StringVar(&creds.TLSCA, "tls-ca", "", "PEM CA certificate, for a server that serves TLS")
	return cmd
}

const hostFlagHelp = "server address (default: ATOLL_HOST, the credentials file, or the local server)"

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
			when(msTime(r.GetQueuedUnixMs())), duration(r), firstNonEmpty(r.GetOutcome(), "running"), exit)
	}
	return tw.Flush()
}

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
				return printWorkers(cmd, resp.GetWorkers())
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

// withAdmin dials the server and runs fn with an Admin client; gRPC errors
// come back as messages for people.
func (f clientFlags) withAdmin(cmd *cobra.Command, fn func(ctx context.Context, admin atollv1.AdminClient, target string) error) error {
	conn, ctx, err := f.dial(cmd.Context())
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := fn(ctx, atollv1.NewAdminClient(conn), conn.Target()); err != nil {
		return rpcError(err)
	}
	return nil
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
