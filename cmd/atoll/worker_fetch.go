package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/kube"
)

// newWorkerFetchCommand is what a worker pod's init container runs: it
// makes the pod's environment archives present in the node's cache.
func newWorkerFetchCommand() *cobra.Command {
	var opts kube.FetchOptions
	var credentialFile string
	cmd := &cobra.Command{
		Use:    "fetch DIGEST...",
		Short:  "Fetch, verify and unpack environment archives into a node's cache (run by worker pods)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cred, err := readSmallFile(credentialFile)
			if err != nil {
				return fmt.Errorf("--credential-file: %w", err)
			}
			opts.Credential, opts.Digests = cred, args
			opts.Logf = func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
			return kube.Fetch(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.URL, "url", "", "the server's archive endpoint")
	f.StringVar(&credentialFile, "credential-file", "", "file holding the credential the server granted this pod")
	f.StringVar(&opts.CacheDir, "cache", "", "the node's archive cache directory")
	for _, name := range []string{"url", "credential-file", "cache"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func readSmallFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	return strings.TrimSpace(string(b)), err
}
