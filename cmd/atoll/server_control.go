package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/serverapp"
)

// runningServer reads the pid file of the server using dataDir; ok is false
// when none runs there.
func runningServer(dataDir string) (pid int, addr string, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(dataDir, serverapp.PIDFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, err
	}
	lines := strings.Fields(string(data))
	if len(lines) < 2 {
		return 0, "", false, fmt.Errorf("malformed pid file in %s", dataDir)
	}
	pid, err = strconv.Atoi(lines[0])
	if err != nil {
		return 0, "", false, fmt.Errorf("malformed pid file in %s: %w", dataDir, err)
	}
	if !alive(pid) {
		return 0, "", false, nil // a stale file from a server that died
	}
	return pid, lines[1], true, nil
}

// alive reports whether pid runs; a zombie (ended, not yet reaped by its
// parent) does not, once its every thread has ended: a process exiting
// shows its main thread as a zombie while its other threads still end,
// and it holds its files (the data directory's lock) until the last has.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc here: trust kill
	}
	// The state follows the command name, which is in parentheses.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		threads, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		return err == nil && len(threads) > 1
	}
	return true
}

func newServerStopCommand(dataDir *string) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop the server that uses --data-dir: calls in flight finish first, up to its --shutdown-grace",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pid, addr, ok, err := runningServer(*dataDir)
			if err != nil {
				return err
			}
			if !ok {
				fmt.Fprintf(cmd.OutOrStdout(), "No server is running with data directory %s.\n", *dataDir)
				return nil
			}
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				return fmt.Errorf("stop server %d: %w", pid, err)
			}
			for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if !alive(pid) {
					fmt.Fprintf(cmd.OutOrStdout(), "Stopped the server at %s (pid %d).\n", addr, pid)
					return nil
				}
			}
			return fmt.Errorf("the server (pid %d) did not stop within %s", pid, timeout)
		},
	}
	// The server's own --shutdown-grace (30 s by default) plus the time it
	// takes to tell cut calls and stop workers.
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "how long to wait for the server to stop (calls in flight finish first, up to its --shutdown-grace)")
	return cmd
}

func newServerStatusCommand(dataDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Say whether a server uses --data-dir, and describe it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pid, addr, ok, err := runningServer(*dataDir)
			if err != nil {
				return err
			}
			if !ok {
				fmt.Fprintf(cmd.OutOrStdout(), "No server is running with data directory %s.\n", *dataDir)
				return exitError{code: 3}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pid:      %d\n", pid)
			return printStatus(cmd, clientFlags{host: addr})
		},
	}
}
