package main

import (
	"fmt"
	"io"
	"path"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/storage"
)

// dataOptions are the flags every `atoll data` subcommand shares. They act
// on the server's data directory directly, so they run on the server host.
type dataOptions struct {
	dataDir string
	account string
}

func newDataCommand() *cobra.Command {
	var opts dataOptions
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Inspect and manage the accounts' persistent /data (on the server host)",
		Long: "Inspect and manage the persistent /data directory of an account, as its workers see it.\n" +
			"Paths are absolute under /data (/data/models) or relative to it (models).\n" +
			"These commands read and write the server's data directory directly.",
	}
	f := cmd.PersistentFlags()
	f.StringVar(&opts.dataDir, "data-dir", defaultDataDir(), "the server's data directory")
	f.StringVar(&opts.account, "account", auth.DefaultAccount, "whose /data")
	cmd.AddCommand(newDataLsCommand(&opts), newDataGetCommand(&opts), newDataRmCommand(&opts))
	return cmd
}

func (o *dataOptions) open() (*storage.Volume, error) {
	dir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return nil, err
	}
	return storage.OpenVolume(dir, o.account)
}

// remotePath reads a path given on the command line as one under /data.
func remotePath(arg string) string {
	if arg == "" || arg == "." {
		return storage.Mount
	}
	if strings.HasPrefix(arg, "/") {
		return arg
	}
	return storage.Mount + "/" + arg
}

func newDataLsCommand(opts *dataOptions) *cobra.Command {
	var recursive bool
	cmd := &cobra.Command{
		Use:   "ls [PATH]",
		Short: "List a directory of /data (default: /data)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := storage.Mount
			if len(args) == 1 {
				target = remotePath(args[0])
			}
			v, err := opts.open()
			if err != nil {
				return err
			}
			defer v.Close()
			infos, err := v.List(target, recursive)
			if err != nil {
				return err
			}
			return printListing(cmd.OutOrStdout(), infos)
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "R", false, "list everything beneath the directory")
	return cmd
}

func printListing(w io.Writer, infos []storage.FileInfo) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, fi := range infos {
		name := fi.Path
		if fi.LinkTarget != "" {
			name += " -> " + fi.LinkTarget
		}
		size := humanize.IBytes(uint64(max(fi.Size, 0)))
		if fi.Mode.IsDir() {
			size = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t %s\t %s\n", fi.Mode, size, fi.ModTime.Format("2006-01-02 15:04"), name)
	}
	return tw.Flush()
}

func newDataGetCommand(opts *dataOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "get PATH [LOCAL]",
		Short: "Copy a file or directory out of /data (to LOCAL, default: its name in the current directory)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := remotePath(args[0])
			dst := path.Base(path.Clean(src))
			if len(args) == 2 {
				dst = args[1]
			}
			v, err := opts.open()
			if err != nil {
				return err
			}
			defer v.Close()
			files, n, err := v.Get(src, dst)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "copied %d files (%s) to %s\n", files, humanize.IBytes(uint64(n)), dst)
			return nil
		},
	}
}

func newDataRmCommand(opts *dataOptions) *cobra.Command {
	var recursive bool
	cmd := &cobra.Command{
		Use:   "rm [-r] PATH...",
		Short: "Remove files or directories from /data",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			v, err := opts.open()
			if err != nil {
				return err
			}
			defer v.Close()
			for _, a := range args {
				if err := v.Remove(remotePath(a), recursive); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "remove directories and what they hold")
	return cmd
}
