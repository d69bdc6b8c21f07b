package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/serverapp"
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
	f.StringVar(&creds.Host, "host", firstNonEmpty(os.Getenv("ATOLL_HOST"), serverapp.DefaultListen), "server address (host:port)")
	f.StringVar(&creds.KeyID, "key-id", "", "API key id")
	f.StringVar(&creds.KeySecret, "key-secret", "", "API key secret")
	f.StringVar(&creds.TLSCA, "tls-ca", "", "PEM CA certificate, for a server that serves TLS")
	return cmd
}
