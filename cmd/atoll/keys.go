package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/serverapp"
	"github.com/atoll-dev/atoll/internal/state"
)

// withAuth runs fn with the key store of the server's data directory: the
// keys commands run on the server host and need no key themselves.
func withAuth(ctx context.Context, dataDir string, fn func(*auth.Authenticator) error) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	store, err := state.Open(ctx, filepath.Join(dataDir, serverapp.StateFile))
	if err != nil {
		return err
	}
	defer store.Close()
	return fn(auth.New(store))
}

func newKeysCommand() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create, list and revoke API keys (on the server host)",
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", defaultDataDir(), "the server's data directory")

	var account, listAccount, label string
	var asJSON bool
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a key; its secret is shown once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var id, secret string
			err := withAuth(cmd.Context(), dataDir, func(a *auth.Authenticator) (err error) {
				id, secret, err = a.CreateKey(cmd.Context(), account, label)
				return err
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]string{"account": account, "key_id": id, "key_secret": secret})
			}
			fmt.Fprintf(out, "Created key %s for account %s. Its secret is shown only now:\n\n", id, account)
			fmt.Fprintf(out, "  export ATOLL_KEY_ID=%s\n  export ATOLL_KEY_SECRET=%s\n\n", id, secret)
			fmt.Fprintf(out, "or save them for the SDK and CLI with:\n\n  atoll login --key-id %s --key-secret %s\n", id, secret)
			return nil
		},
	}
	create.Flags().StringVar(&account, "account", auth.DefaultAccount, "account the key acts for (created if new)")
	create.Flags().StringVar(&label, "label", "", "a note to tell keys apart")
	create.Flags().BoolVar(&asJSON, "json", false, "print the key as JSON")

	list := &cobra.Command{
		Use:   "list",
		Short: "List keys (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var keys []auth.KeyInfo
			err := withAuth(cmd.Context(), dataDir, func(a *auth.Authenticator) (err error) {
				keys, err = a.List(cmd.Context(), listAccount)
				return err
			})
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tACCOUNT\tLABEL\tCREATED\tLAST USED\tREVOKED")
			for _, k := range keys {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Account, k.Label, when(k.Created), when(k.LastUsed), when(k.RevokedAt))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&listAccount, "account", "", "only this account's keys")

	revoke := &cobra.Command{
		Use:   "revoke KEY_ID",
		Short: "Revoke a key; calls with it fail from then on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := withAuth(cmd.Context(), dataDir, func(a *auth.Authenticator) error {
				return a.Revoke(cmd.Context(), args[0])
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Revoked %s (a running server stops accepting it within %s).\n", args[0], auth.DefaultVerifiedTTL)
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}
