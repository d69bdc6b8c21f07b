package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

func newSecretsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Manage your secrets: environment variables for functions that name them",
		Long: "Secrets are named sets of environment variables, kept encrypted on the server.\n" +
			"A function declared with @isolated(secrets=[\"NAME\"]) sees them in os.environ.",
	}
	cmd.AddCommand(newSecretsSetCommand(), newSecretsListCommand(), newSecretsRmCommand())
	return cmd
}

func newSecretsSetCommand() *cobra.Command {
	var client clientFlags
	cmd := &cobra.Command{
		Use:   "set NAME KEY=VALUE...",
		Short: "Create or replace a secret",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			values := make(map[string]string, len(args)-1)
			for _, kv := range args[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("%q is not KEY=VALUE", strings.SplitN(kv, "=", 2)[0])
				}
				values[k] = v
			}
			return client.withAdmin(cmd, func(ctx context.Context, admin atollv1.AdminClient, _ string) error {
				if _, err := admin.SetSecret(ctx, &atollv1.SetSecretRequest{Name: args[0], Values: values}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "secret %s set (%d variables)\n", args[0], len(values))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&client.host, "host", "", hostFlagHelp)
	return cmd
}

func newSecretsListCommand() *cobra.Command {
	var client clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List your secrets and the variables they set (never their values)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return client.withAdmin(cmd, func(ctx context.Context, admin atollv1.AdminClient, _ string) error {
				resp, err := admin.ListSecrets(ctx, &atollv1.ListSecretsRequest{})
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SECRET\tVARIABLES\tUPDATED")
				for _, s := range resp.GetSecrets() {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", s.GetName(), strings.Join(s.GetKeys(), ","), when(msTime(s.GetUpdatedUnixMs())))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&client.host, "host", "", hostFlagHelp)
	return cmd
}

func newSecretsRmCommand() *cobra.Command {
	var client clientFlags
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a secret",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return client.withAdmin(cmd, func(ctx context.Context, admin atollv1.AdminClient, _ string) error {
				if _, err := admin.DeleteSecret(ctx, &atollv1.DeleteSecretRequest{Name: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "secret %s deleted\n", args[0])
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&client.host, "host", "", hostFlagHelp)
	return cmd
}
