// Package agent is the worker agent (`atoll worker`) that runs inside each
// worker's sandbox. It starts the Python runner, hands it calls from the
// server, captures its file descriptors 1 and 2 (so output of C code and
// subprocesses streams too) and reports output, results and the runner's
// death upstream. It speaks the worker protocol through package
// workerproto, on pipes it was handed or on a connection it dialed back on,
// and owns the agent <-> runner framing (runner.go, whose other end is
// python/atoll/_runner.py). It never decides scheduling, limits or
// environments, and never lays out server protocol bytes itself.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// bootstrap starts the runner: the SDK directory goes first on sys.path so
// the atoll package is always this server's. The runtime directory (the
// runner's own packages) is not put on the path: the runner imports its
// cloudpickle from there and keeps the directory out of the user's view
// until the user's code imports atoll (see python/atoll/_runner.py). The
// modules named after the runtime directory (only cloudpickle: see
// Options.PreloadCloudpickle) are imported before the runner reports
// ready. The
// runner is loaded from its file, so that importing it does not import the
// whole SDK (and gRPC) into every worker.
const bootstrap = `import sys, importlib.util
sdk, runtime, preload = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(1, sdk)
spec = importlib.util.spec_from_file_location("atoll_runner", sdk + "/atoll/_runner.py")
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)
runner.main(runtime, preload)
`

// Options configures the agent.
type Options struct {
	// Python is the interpreter that runs the runner.
	Python string
	// SDKDir holds the atoll package (see package python).
	SDKDir string
	// RuntimeDir, if set, holds the runner's third-party needs.
	RuntimeDir string
	// PreloadCloudpickle has the runner import cloudpickle before it
	// reports ready, rather than when a call first needs it.
	PreloadCloudpickle bool
	// Dir is the runner's working directory ("" = inherit).
	Dir string
	// Conn carries the worker protocol to and from the server. Required.
	Conn *workerproto.AgentConn
	// RunnerUser, if set, runs the runner as this user, and AgentUser is
	// the user the agent drops to once the runner has started, before the
	// first call: the sandbox starts the agent as uid 0 with CAP_SETUID,
	// CAP_SETGID and CAP_SETPCAP only, so that the user's code and the
	// agent that supervises it are two users, and user code can neither
	// signal, trace nor open the files of its agent. Both or neither.
	RunnerUser, AgentUser *User
	// Logger receives the agent's own diagnostics (its stderr).
	Logger *slog.Logger
}

// Agent runs one Python runner on behalf of the server.
type Agent struct {
	opts Options
	log  *slog.Logger
	conn *workerproto.AgentConn
}

// New returns an agent; Run starts it.
func New(opts Options) *Agent {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Agent{opts: opts, log: log, conn: opts.Conn}
}

func (a *Agent) send(ev *atollv1.WorkerEvent) {
	if err := a.conn.Send(ev); err != nil {
		a.log.Debug("cannot report to server", "err", err)
	}
}

type runner struct {
	cmd     *exec.Cmd
	calls   *os.File
	stdout  *outputPipe
	stderr  *outputPipe
	results chan frame
	// resultPipe is read by the results goroutine, except while it waits
	// on valueRead for a value's bytes to be passed on.
	resultPipe *os.File
	valueRead  chan struct{}
	readErr    error
}

// hugePages asks glibc's malloc to back the memory it maps with
// transparent huge pages (madvise MADV_HUGEPAGE; glibc 2.35 and later, and
// ignored before): a 100 MB value received or built by the runner then
// faults in about 50 pages instead of 25,000 (allocating and touching
// 100 MB took 30 ms instead of 74 ms on the 2-CPU development machine). It
// costs an idle runner about 0.4 MiB.
const hugePages = "glibc.malloc.hugetlb=1"

// runnerEnv is the runner's environment: the agent's, with hugePages
// unless GLIBC_TUNABLES is set already (then it is left as it is).
func runnerEnv(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "GLIBC_TUNABLES=") {
			return env
		}
	}
	return append(env[:len(env):len(env)], "GLIBC_TUNABLES="+hugePages)
}

func (a *Agent) startRunner() (*runner, error) {
	callR, callW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	resR, resW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	args := []string{"-u", "-c", bootstrap, a.opts.SDKDir, a.opts.RuntimeDir}
	if a.opts.PreloadCloudpickle {
		args = append(args, "cloudpickle")
	}
	cmd := exec.Command(a.opts.Python, args...)
	cmd.Dir = a.opts.Dir
	cmd.Env = runnerEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.ExtraFiles = []*os.File{callR, resW}
	cmd.SysProcAttr = runnerProcAttr(a.opts.RunnerUser)
	start := cmd.Start
	if a.opts.RunnerUser != nil {
		start = func() error { return startWithoutBoundingSet(cmd) }
	}
	if err := start(); err != nil {
		return nil, fmt.Errorf("start python runner %s: %w", a.opts.Python, err)
	}
	for _, f := range []*os.File{callR, resW, outW, errW} {
		f.Close()
	}
	// Calls and values cross these pipes: a large capacity takes a 100 MB
	// argument across in fewer wake-ups.
	workerproto.GrowPipe(callW)
	workerproto.GrowPipe(resR)
	if a.opts.AgentUser != nil {
		if err := dropTo(*a.opts.AgentUser); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			for _, f := range []*os.File{callW, resR, outR, errR} {
				f.Close()
			}
			return nil, err
		}
	}
	r := &runner{
		cmd:        cmd,
		calls:      callW,
		stdout:     newOutputPipe(outR, atollv1.Stream_STREAM_STDOUT, a.send),
		stderr:     newOutputPipe(errR, atollv1.Stream_STREAM_STDERR, a.send),
		results:    make(chan frame),
		resultPipe: resR,
		valueRead:  make(chan struct{}),
	}
	go func() {
		defer close(r.results)
		defer resR.Close()
		for {
			f, err := readFrame(resR)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					r.readErr = err
				}
				return
			}
			r.results <- f
			if f.kind == frameResult || f.kind == frameYield {
				<-r.valueRead
			}
		}
	}()
	return r, nil
}

func (r *runner) flushOutput() {
	r.stdout.Flush()
	r.stderr.Flush()
}

// Run serves calls until the server closes the protocol stream, the runner
// dies or ctx ends. A runner's death is reported as a WORKER_CRASHED failure.
func (a *Agent) Run(ctx context.Context) error {
	if (a.opts.RunnerUser == nil) != (a.opts.AgentUser == nil) {
		err := errors.New("agent: RunnerUser and AgentUser go together")
		a.reportFailure(err.Error(), -1, 0)
		return err
	}
	if err := protectAgent(); err != nil {
		a.reportFailure(err.Error(), -1, 0)
		return err
	}
	r, err := a.startRunner()
	if err != nil {
		a.reportFailure(err.Error(), -1, 0)
		return err
	}
	defer r.cmd.Process.Kill()

	first, ok := <-r.results
	if !ok || first.kind != frameReady {
		return a.runnerDied(r, "the Python runner exited while starting")
	}
	a.send(&atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Ready{Ready: &atollv1.WorkerReady{RunnerPid: int32(r.cmd.Process.Pid)}}})

	calls := make(chan workerproto.Call)
	callRead := make(chan struct{})
	go a.readCalls(calls, callRead)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case call, ok := <-calls:
			if !ok {
				// The server is done with this worker.
				r.calls.Close()
				return nil
			}
			err := a.passCall(r, call)
			callRead <- struct{}{}
			if err != nil {
				return a.runnerDied(r, fmt.Sprintf("could not hand the call to the runner: %v", err))
			}
			if err := a.answer(ctx, r, calls); err != nil {
				return err
			}
		case _, ok := <-r.results:
			if !ok {
				return a.runnerDied(r, "the worker process died while idle")
			}
		}
	}
}

// answer passes the runner's answer to one call upstream: the values a
// generator yields, each once the output written before it is forwarded,
// then the call's end.
func (a *Agent) answer(ctx context.Context, r *runner, calls <-chan workerproto.Call) error {
	for {
		var f frame
		var ok bool
		select {
		case f, ok = <-r.results:
		case _, open := <-calls:
			if !open {
				// The server closed the stream mid-call: it died, or tore
				// this worker down. Nothing would take the result, so the
				// user's code must not run on: the deferred kill ends the
				// runner, and this agent's exit ends its sandbox's every
				// process.
				a.log.Warn("the server went away during a call; ending the runner")
				return nil
			}
			return errors.New("the server sent a call while one was running")
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return a.runnerDied(r, "the worker process died during the call")
		}
		r.flushOutput()
		if err := a.report(r, f); err != nil || f.kind != frameYield {
			return err
		}
	}
}

// passCall copies a call's function and arguments from the server's stream
// into the runner's call pipe, without holding them.
func (a *Agent) passCall(r *runner, call workerproto.Call) error {
	if len(call.Env) > 0 {
		if err := writeEnv(r.calls, call.Env); err != nil {
			return err
		}
	}
	if err := writeCallHeader(r.calls, call.FunctionSize, call.ArgumentsSize); err != nil {
		return err
	}
	return a.conn.CopyPayload(r.calls, call)
}

// report sends a runner's answer upstream; a value's bytes go straight from
// the runner's pipe to the server's stream.
func (a *Agent) report(r *runner, f frame) error {
	if f.kind != frameResult && f.kind != frameYield {
		ev, err := f.event()
		if err != nil {
			a.reportFailure(err.Error(), -1, 0)
			return err
		}
		a.send(ev)
		return nil
	}
	send := a.conn.SendValue
	if f.kind == frameYield {
		send = a.conn.SendYielded
	}
	err := send(f.size, func(w io.Writer) error {
		_, err := io.CopyN(w, r.resultPipe, f.size)
		return err
	})
	r.valueRead <- struct{}{}
	if err != nil {
		return fmt.Errorf("pass the result on: %w", err)
	}
	return nil
}

// readCalls reads call headers; after each it waits on read until the call's
// raw bytes have been passed on.
func (a *Agent) readCalls(calls chan<- workerproto.Call, read <-chan struct{}) {
	defer close(calls)
	for {
		call, err := a.conn.ReadCall()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				a.log.Warn("reading calls", "err", err)
			}
			return
		}
		calls <- call
		<-read
	}
}

// runnerDied reports the runner's exit status once its output is forwarded.
func (a *Agent) runnerDied(r *runner, what string) error {
	r.flushOutput()
	werr := r.cmd.Wait()
	code, sig := -1, 0
	if st, ok := r.cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		if st.Signaled() {
			sig = int(st.Signal())
		} else {
			code = st.ExitStatus()
		}
	}
	msg := what
	switch {
	case sig != 0:
		msg = fmt.Sprintf("%s: killed by signal %d (%s)", what, sig, syscall.Signal(sig))
	case code >= 0:
		msg = fmt.Sprintf("%s: exit status %d", what, code)
	}
	if r.readErr != nil {
		msg += fmt.Sprintf(" (%v)", r.readErr)
	}
	a.reportFailure(msg, code, sig)
	r.stdout.Close()
	r.stderr.Close()
	if werr == nil {
		werr = errors.New(msg)
	}
	return werr
}

func (a *Agent) reportFailure(msg string, code, sig int) {
	a.send(&atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Failure{Failure: &atollv1.Failure{
		Kind:     atollv1.FailureKind_FAILURE_KIND_WORKER_CRASHED,
		Message:  msg,
		ExitCode: int32(code),
		Signal:   int32(sig),
	}}})
}
