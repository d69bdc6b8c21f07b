package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/agent"
	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/workerproto"
	"github.com/atoll-dev/atoll/python"
)

// localOptions configure a host=local worker, which the Python SDK starts on
// the caller's own machine with no server: the agent builds (or reuses) its
// environment itself before serving calls.
type localOptions struct {
	enabled      bool
	envRoot      string
	python       string
	requirements []string
}

// dialOptions configure a worker that dials back to the server instead of
// speaking on its stdin and stdout.
type dialOptions struct {
	addr      string
	tokenFile string
}

func newWorkerCommand() *cobra.Command {
	var opts agent.Options
	var local localOptions
	var dial dialOptions
	cmd := &cobra.Command{
		Use:    "worker",
		Short:  "Run the worker agent (started by the server, or by the SDK for host=local)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The agent only moves bytes between pipes: on one P its
			// goroutines hand calls to each other without waking threads,
			// which cost more CPU per call than the work itself.
			runtime.GOMAXPROCS(1)
			if local.enabled {
				// The caller's terminal is the only place these go: warnings only.
				opts.Logger = newWorkerLogger(slog.LevelWarn)
				opts.Conn = workerproto.NewAgentConn(os.Stdin, os.Stdout)
				return runLocalWorker(cmd.Context(), local, opts)
			}
			opts.Logger = newWorkerLogger(slog.LevelInfo)
			if dial.addr == "" {
				opts.Conn = workerproto.NewAgentConn(os.Stdin, os.Stdout)
			} else {
				conn, err := dialServer(cmd.Context(), dial)
				if err != nil {
					opts.Logger.Error("cannot reach the server", "err", err)
					return exitError{code: 1}
				}
				defer conn.Close()
				opts.Conn = workerproto.NewAgentConn(conn, conn)
			}
			if err := agent.New(opts).Run(cmd.Context()); err != nil {
				return exitError{code: 1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Python, "python", "python3", "interpreter that runs the runner")
	f.StringVar(&opts.SDKDir, "sdk", "", "directory holding the atoll Python package")
	f.StringVar(&opts.RuntimeDir, "runtime", "", "directory holding the runner's own packages")
	f.StringVar(&dial.addr, "connect", "", "dial the server's worker listener at this address instead of speaking on stdin and stdout")
	f.StringVar(&dial.tokenFile, "token-file", "", "with --connect: file holding the worker's token")
	f.BoolVar(&local.enabled, "local", false, "build the environment here first (host=local, no server)")
	f.StringVar(&local.envRoot, "env-root", "", "with --local: directory holding environments, the uv cache and the SDK")
	f.StringVar(&local.python, "python-version", "", "with --local: the caller's Python major.minor, e.g. 3.11")
	f.StringArrayVar(&local.requirements, "requirement", nil, "with --local: a pip requirement string (repeatable)")
	cmd.MarkFlagsOneRequired("sdk", "local")
	for _, name := range []string{"sdk", "runtime", "python"} {
		cmd.MarkFlagsMutuallyExclusive("local", name)
	}
	cmd.MarkFlagsRequiredTogether("local", "env-root", "python-version")
	cmd.MarkFlagsRequiredTogether("connect", "token-file")
	cmd.MarkFlagsMutuallyExclusive("local", "connect")
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

func newWorkerLogger(level slog.Level) *slog.Logger {
	h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	return slog.New(h).With("component", "worker")
}

// runLocalWorker builds (or reuses) the environment the way the server does,
// streaming uv's output as system lines, then serves calls in it like any
// worker. What goes wrong before the runner starts is reported as a Failure
// event, as the server would report it, so the SDK raises the same errors.
func runLocalWorker(ctx context.Context, local localOptions, opts agent.Options) error {
	events := opts.Conn
	fail := func(f *atollv1.Failure) error {
		if err := events.Send(&atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Failure{Failure: f}}); err != nil {
			opts.Logger.Warn("cannot report failure", "err", err, "failure", f.GetMessage())
		}
		return exitError{code: 1}
	}
	root, err := filepath.Abs(local.envRoot)
	if err != nil {
		return fail(internalFailure(fmt.Errorf("--env-root: %w", err)))
	}
	lock, err := runtimeLock()
	if err != nil {
		return fail(internalFailure(err))
	}
	builder, err := envbuild.New(envbuild.Options{
		Root:            root,
		Logger:          opts.Logger.With("component", "envbuild"),
		RuntimeLock:     lock,
		CompileBytecode: true,
		SeedPip:         true,
		// host=local runs on the caller's own machine: its paths are theirs.
		AllowLocalRequirements: true,
	})
	if err != nil {
		return fail(&atollv1.Failure{
			Kind:    atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD,
			Message: fmt.Sprintf("host=local cannot build environments under %s: %v", root, err),
		})
	}
	defer builder.Close()

	logf := func(line string) {
		_ = events.Send(&atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Output{Output: &atollv1.Output{
			Stream: atollv1.Stream_STREAM_SYSTEM, Data: []byte(line + "\n"),
		}}})
	}
	spec := envbuild.Spec{Python: local.python, Requirements: local.requirements}
	env, release, err := builder.EnsureAcquire(ctx, spec, logf)
	if err != nil {
		return fail(localEnvFailure(err, spec))
	}
	defer release()
	runtimeDir, err := builder.Runtime(ctx, spec.Python, logf)
	if err != nil {
		return fail(&atollv1.Failure{
			Kind:    atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD,
			Message: fmt.Sprintf("the worker runtime (cloudpickle, grpcio, protobuf from the runtime lock) could not be installed: %v", err),
		})
	}
	sdkDir, err := python.WriteSDK(filepath.Join(root, "sdk"))
	if err != nil {
		return fail(internalFailure(err))
	}
	if err := enterVenv(env.Dir); err != nil {
		return fail(internalFailure(err))
	}

	opts.Python, opts.SDKDir, opts.RuntimeDir = env.Python, sdkDir, runtimeDir
	if err := agent.New(opts).Run(ctx); err != nil {
		return exitError{code: 1}
	}
	return nil
}

// localEnvFailure words an environment error for the caller, like the
// server's failure mapping, but about this machine.
func localEnvFailure(err error, spec envbuild.Spec) *atollv1.Failure {
	var pu *envbuild.PythonUnavailableError
	var be *envbuild.BuildError
	switch {
	case errors.As(err, &pu):
		avail := "none"
		if len(pu.Available) > 0 {
			avail = strings.Join(pu.Available, ", ")
		}
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_PYTHON_UNAVAILABLE, Message: fmt.Sprintf(
			"host=local needs a CPython %s interpreter installed on this machine, the caller's version, "+
				"and uv finds none (it finds: %s); install Python %s system-wide or with pyenv",
			pu.Requested, avail, pu.Requested)}
	case errors.As(err, &be):
		detail := be.Output
		if detail == "" {
			detail = err.Error()
		}
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD, Message: fmt.Sprintf(
			"could not build the environment for requirements %q:\n%s", spec.Requirements, detail)}
	case errors.Is(err, envbuild.ErrInvalidSpec):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD, Message: err.Error()}
	case errors.Is(err, context.Canceled):
		return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_CANCELLED, Message: "the local worker was stopped while building its environment"}
	}
	return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_ENVIRONMENT_BUILD, Message: fmt.Sprintf(
		"could not prepare the environment for requirements %q: %v", spec.Requirements, err)}
}

func internalFailure(err error) *atollv1.Failure {
	return &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_INTERNAL, Message: "host=local worker: " + err.Error()}
}

// enterVenv makes the runner, and whatever it starts, see the environment as
// activated, and keeps the caller's PYTHONPATH and PYTHONHOME out of it: the
// function must see only its own requirements.
func enterVenv(dir string) error {
	for _, name := range []string{"PYTHONPATH", "PYTHONHOME"} {
		if err := os.Unsetenv(name); err != nil {
			return err
		}
	}
	path := filepath.Join(dir, "bin")
	if old := os.Getenv("PATH"); old != "" {
		path += string(os.PathListSeparator) + old
	}
	if err := os.Setenv("PATH", path); err != nil {
		return err
	}
	return os.Setenv("VIRTUAL_ENV", dir)
}
