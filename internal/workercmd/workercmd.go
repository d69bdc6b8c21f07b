// Package workercmd is the worker agent's command line (`atoll worker`):
// its flags into agent.Options, the agent's logger and its connection to
// the server. Both the atoll binary and the slim atoll-agent binary serve
// it (see cmd/atoll-agent). It never exits the process: its callers do,
// with the code an ExitError carries.
package workercmd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/agent"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// dialOptions configure a worker that dials back to the server instead of
// speaking on its stdin and stdout.
type dialOptions struct {
	addr      string
	tokenFile string
}

// New returns the worker command.
func New() *cobra.Command {
	var opts agent.Options
	var dial dialOptions
	var workDir, runnerUser, agentUser string
	cmd := &cobra.Command{
		Use:    "worker",
		Short:  "Run the worker agent (started by the server, or by the host=local supervisor)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The agent only moves bytes between pipes: on one P its
			// goroutines hand calls to each other without waking threads,
			// which cost more CPU per call than the work itself.
			runtime.GOMAXPROCS(1)
			// JSON: the server reads these records one per line, and drops
			// anything else on this stream (see sandbox.stderrPump).
			opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			if (runnerUser == "") != (agentUser == "") {
				return fmt.Errorf("--runner-user and --agent-user go together")
			}
			if runnerUser != "" {
				ru, err := agent.ParseUser(runnerUser)
				if err != nil {
					return fmt.Errorf("--runner-user: %w", err)
				}
				au, err := agent.ParseUser(agentUser)
				if err != nil {
					return fmt.Errorf("--agent-user: %w", err)
				}
				if ru.UID == au.UID {
					return fmt.Errorf("--runner-user and --agent-user must be two users")
				}
				opts.RunnerUser, opts.AgentUser = &ru, &au
			}
			if workDir != "" {
				if err := os.Chdir(workDir); err != nil {
					return fmt.Errorf("--workdir: %w", err)
				}
			}
			if dial.addr == "" {
				opts.Conn = workerproto.NewAgentConn(pollable(os.Stdin), pollable(os.Stdout))
			} else {
				conn, err := dialServer(cmd.Context(), dial)
				if err != nil {
					opts.Logger.Error("cannot reach the server", "err", err)
					return ExitError{Code: 1}
				}
				defer conn.Close()
				opts.Conn = workerproto.NewAgentConn(conn, conn)
			}
			if err := agent.New(opts).Run(cmd.Context()); err != nil {
				return ExitError{Code: 1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Python, "python", "python3", "interpreter that runs the runner")
	f.StringVar(&opts.SDKDir, "sdk", "", "directory holding the atoll Python package")
	f.StringVar(&opts.RuntimeDir, "runtime", "", "directory holding the runner's own packages")
	f.BoolVar(&opts.PreloadCloudpickle, "preload-cloudpickle", false, "have the runner import cloudpickle as it starts (the function's pickle needs it)")
	f.StringVar(&dial.addr, "connect", "", "dial the server's worker listener at this address instead of speaking on stdin and stdout")
	f.StringVar(&dial.tokenFile, "token-file", "", "with --connect: file holding the worker's token")
	f.StringVar(&workDir, "workdir", "", "directory the runner starts in (host=local: the caller's)")
	f.StringVar(&runnerUser, "runner-user", "", "UID:GID to run the runner as (the agent must start as uid 0 with CAP_SETUID, CAP_SETGID and CAP_SETPCAP)")
	f.StringVar(&agentUser, "agent-user", "", "with --runner-user: UID:GID the agent drops to once the runner has started")
	_ = cmd.MarkFlagRequired("sdk")
	cmd.MarkFlagsRequiredTogether("connect", "token-file")
	return cmd
}

// dialServer reads the worker's token and dials back to the server.
func dialServer(ctx context.Context, dial dialOptions) (io.ReadWriteCloser, error) {
	f, err := os.Open(dial.tokenFile)
	if err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	token, err := io.ReadAll(io.LimitReader(f, workerproto.MaxTokenBytes+1))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, workerproto.HandshakeTimeout)
	defer cancel()
	return workerproto.Dial(ctx, dial.addr, strings.TrimSpace(string(token)))
}

// pollable returns f as a file Go's poller waits on. The standard streams
// are opened blocking: every read of a call would then hold a thread in the
// kernel, which the runtime hands its P away from after 20 µs and takes it
// back from on return, a thread wake-up or two per call. Non-blocking, a
// waiting read parks only its goroutine. f is returned as it is where it
// cannot be made non-blocking.
func pollable(f *os.File) *os.File {
	fd := int(f.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		return f
	}
	return os.NewFile(uintptr(fd), f.Name())
}
