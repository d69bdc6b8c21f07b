package sandbox

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/atoll-dev/atoll/internal/scheduler"
)

// ProcessOptions configures NewProcess.
type ProcessOptions struct {
	// StateDir, when set, holds a private temporary directory per worker
	// (its TMPDIR), removed when the worker ends.
	StateDir string
	// Stderr receives the agents' standard error, as it comes (for tests
	// and tools). It must be safe for concurrent use. When nil, the
	// agent's records are logged through Logger, bounded (see agentLog).
	Stderr io.Writer
	// Logger receives the launcher's diagnostics. Default: discard.
	Logger *slog.Logger
}

// ProcessLauncher runs each worker's agent as a plain child process in its
// own process group. It enforces no limits and isolates nothing: the
// fallback for hosts without an OCI runtime or without the privileges for
// one (macOS, non-root).
type ProcessLauncher struct {
	opts ProcessOptions
}

// NewProcess returns a launcher of plain child processes.
func NewProcess(opts ProcessOptions) *ProcessLauncher {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &ProcessLauncher{opts: opts}
}

// Start runs spec.Args with spec.Env. The account's data directory is
// passed as ATOLL_DATA_DIR (the runner maps /data paths through it) and
// assigned GPUs as CUDA_VISIBLE_DEVICES.
func (l *ProcessLauncher) Start(ctx context.Context, spec HostSpec) (HostProcess, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(spec.Args) == 0 {
		return nil, fmt.Errorf("%w: no agent command", ErrInvalidSpec)
	}
	env := append([]string(nil), spec.Env...)
	if spec.DataDir != "" {
		env = setEnv(env, "ATOLL_DATA_DIR", spec.DataDir)
	}
	if len(spec.GPUs) > 0 {
		env = setEnv(env, "CUDA_DEVICE_ORDER", "PCI_BUS_ID")
		env = setEnv(env, "CUDA_VISIBLE_DEVICES", joinInts(spec.GPUs))
	}
	var tmpDir string
	if l.opts.StateDir != "" {
		if err := validID(spec.ID); err != nil {
			return nil, err
		}
		tmpDir = filepath.Join(l.opts.StateDir, "tmp", spec.ID)
		if err := os.MkdirAll(tmpDir, 0o700); err != nil {
			return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
		}
		env = setEnv(env, "TMPDIR", tmpDir)
	}
	p, err := startProcess(spec, env, l.opts)
	if err != nil {
		if tmpDir != "" {
			os.RemoveAll(tmpDir)
		}
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	p.tmpDir = tmpDir
	return p, nil
}

type childProcess struct {
	cmd     *exec.Cmd
	pipes   *stdioPipes
	stderr  *stderrPump
	tmpDir  string
	done    chan struct{} // closed when the agent has exited
	waitErr error

	teardown sync.Once
	exit     scheduler.Exit
	err      error
}

func startProcess(spec HostSpec, env []string, opts ProcessOptions) (*childProcess, error) {
	pipes, err := newStdioPipes()
	if err != nil {
		return nil, err
	}
	pump, err := startStderrPump(opts.Stderr, opts.Logger, spec.ID, spec.Account)
	if err != nil {
		pipes.closeAll()
		return nil, err
	}
	cmd := exec.Command(spec.Args[0], spec.Args[1:]...)
	cmd.Env = env
	cmd.Stdin = pipes.childIn
	cmd.Stdout = pipes.childOut
	cmd.Stderr = pump.w
	cmd.SysProcAttr = dieWithServer(ownProcessGroup())
	err = cmd.Start()
	pipes.closeChild()
	pump.w.Close()
	if err != nil {
		pipes.conn.Close()
		pump.finish(0)
		return nil, err
	}
	p := &childProcess{cmd: cmd, pipes: pipes, stderr: pump, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *childProcess) Stdio() io.ReadWriteCloser { return p.pipes.conn }

// Kill ends the agent's whole process group.
func (p *childProcess) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	return killGroup(p.cmd.Process.Pid)
}

// Wait waits for the agent, then ends whatever it left running in its
// process group.
func (p *childProcess) Wait() (scheduler.Exit, error) {
	<-p.done
	p.teardown.Do(func() {
		killGroup(p.cmd.Process.Pid)
		p.stderr.finish(time.Second)
		p.pipes.conn.closeWrite()
		p.exit = exitOf(p.cmd.ProcessState)
		if p.tmpDir != "" {
			p.err = os.RemoveAll(p.tmpDir)
		}
	})
	return p.exit, p.err
}

// setEnv replaces or appends key=value.
func setEnv(env []string, key, value string) []string {
	prefix := key + "="
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	return append(out, prefix+value)
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
