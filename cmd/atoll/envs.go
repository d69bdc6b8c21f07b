package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/sandbox"
	"github.com/atoll-dev/atoll/internal/serverapp"
)

func newEnvsCommand() *cobra.Command {
	var dataDir string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "envs",
		Short: "List and prune the server's environments (on the server host)",
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", defaultDataDir(), "the server's data directory")
	open := func() (*envbuild.Builder, error) {
		lock, err := runtimeLock()
		if err != nil {
			return nil, err
		}
		log := slog.New(slog.DiscardHandler)
		if verbose {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		opts := serverapp.BuilderOptions(dataDir, lock, log)
		// The operator, on the host itself, may name its paths.
		opts.AllowLocalRequirements = true
		// Built as the server would: in its sandbox, where there is one.
		kind, _, err := sandbox.Detect("auto")
		if err != nil {
			return nil, err
		}
		sb, _, err := serverapp.BuildSandbox(dataDir, kind, log)
		if err != nil {
			return nil, err
		}
		if sb != nil {
			opts.Sandbox = sb
		}
		return envbuild.New(opts)
	}

	var pythonVersion string
	build := &cobra.Command{
		Use:   "build [REQUIREMENT...]",
		Short: "Build (or find) the environment for a requirement set, as a call would",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := open()
			if err != nil {
				return err
			}
			defer b.Close()
			if pythonVersion == "" {
				pythonVersion = python3Version()
			}
			started := time.Now()
			env, err := b.Ensure(cmd.Context(), envbuild.Spec{Python: pythonVersion, Requirements: args}, func(line string) {
				fmt.Fprintln(cmd.ErrOrStderr(), line)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%s)\n", env.Key[:12], env.Dir, time.Since(started).Round(time.Millisecond))
			return nil
		},
	}
	build.Flags().StringVar(&pythonVersion, "python", "", "Python major.minor (default: python3's)")
	build.Flags().BoolVarP(&verbose, "verbose", "v", false, "log the builder's steps and how long each took")

	list := &cobra.Command{
		Use:   "list",
		Short: "List environments, most recently used first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := open()
			if err != nil {
				return err
			}
			defer b.Close()
			infos, err := b.List()
			if err != nil {
				return err
			}
			printEnvs(cmd, infos)
			return nil
		},
	}

	var olderThan time.Duration
	var maxBytes int64
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Remove environments unused for --older-than, or beyond --max-bytes in all (least recently used first); never one in use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if olderThan <= 0 && maxBytes <= 0 {
				return fmt.Errorf("say what to prune: --older-than DURATION and/or --max-bytes N")
			}
			b, err := open()
			if err != nil {
				return err
			}
			defer b.Close()
			removed, err := b.Prune(olderThan, maxBytes)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed %d environments.\n", len(removed))
			if len(removed) > 0 {
				printEnvs(cmd, removed)
			}
			return nil
		},
	}
	prune.Flags().DurationVar(&olderThan, "older-than", 0, "remove environments unused for this long (e.g. 720h)")
	prune.Flags().Int64Var(&maxBytes, "max-bytes", 0, "keep at most this many bytes of environments")
	cmd.AddCommand(build, list, prune)
	return cmd
}

// python3Version is python3's major.minor here, or "" if there is none.
func python3Version() string {
	out, err := exec.Command("python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func printEnvs(cmd *cobra.Command, infos []envbuild.Info) {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tPYTHON\tREQUIREMENTS\tSIZE\tLAST USED\tIN USE")
	for _, e := range infos {
		reqs := strings.Join(e.Requirements, " ")
		if reqs == "" {
			reqs = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", e.Key[:12], e.Python, reqs, machine.FormatBytes(e.SizeBytes), when(e.LastUsed), e.InUse)
	}
	tw.Flush()
}
