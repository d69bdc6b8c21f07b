package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"syscall"

	"github.com/atoll-dev/atoll/internal/scheduler"
)

type processLauncher struct{}

type proc struct {
	cmd  *exec.Cmd
	conn io.ReadWriteCloser
}

type pipeConn struct {
	io.Reader
	io.WriteCloser
}

func (processLauncher) Start(_ context.Context, spec scheduler.WorkerSpec) (scheduler.Process, error) {
	cmd := exec.Command(spec.Args[0], spec.Args[1:]...)
	cmd.Env = append(spec.Env, "HOME="+os.TempDir())
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &proc{cmd: cmd, conn: pipeConn{out, in}}, nil
}

func (p *proc) Conn() io.ReadWriteCloser { return p.conn }
func (p *proc) Kill() error              { return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) }
func (p *proc) Wait() (scheduler.Exit, error) {
	err := p.cmd.Wait()
	st := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if st.Signaled() {
		return scheduler.Exit{Code: -1, Signal: int(st.Signal())}, nil
	}
	_ = err
	return scheduler.Exit{Code: st.ExitStatus()}, nil
}
