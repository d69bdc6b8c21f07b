package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/supervisor"
)

// defaultCacheDir is the user's atoll cache, as the SDK computes it:
// $XDG_CACHE_HOME/atoll, else ~/.cache/atoll.
func defaultCacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "atoll")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "atoll-cache")
	}
	return filepath.Join(home, ".cache", "atoll")
}

func newLocalCommand() *cobra.Command {
	var root, logLevel string
	var idleExit time.Duration
	cmd := &cobra.Command{
		Use:    "local",
		Short:  "Run the host=local supervisor (started on demand by the SDK)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			agent, err := os.Executable()
			if err != nil {
				return fmt.Errorf("locate the atoll binary: %w", err)
			}
			lock, err := runtimeLock()
			if err != nil {
				return err
			}
			return supervisor.Run(cmd.Context(), supervisor.Options{
				Root: root, Agent: agent, Version: version, RuntimeLock: lock, IdleExit: idleExit, Logger: log,
			})
		},
	}
	cmd.PersistentFlags().StringVar(&root, "cache-dir", defaultCacheDir(), "the user's atoll cache: environments, and run/ with the socket")
	cmd.Flags().DurationVar(&idleExit, "idle-exit", supervisor.DefaultIdleExit, "stop after this long with no caller connected")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.AddCommand(&cobra.Command{
		Use:   "stop",
		Short: "Stop the host=local supervisor of --cache-dir, and its workers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ran, err := supervisor.Stop(root)
			if err != nil {
				return err
			}
			if ran {
				fmt.Fprintln(cmd.OutOrStdout(), "Stopped the host=local supervisor.")
			}
			return nil
		},
	})
	return cmd
}
