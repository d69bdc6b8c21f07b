//go:build unix

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/atoll-dev/atoll/internal/scheduler"
)

func startProcessAgent(t *testing.T, l *ProcessLauncher, spec HostSpec) *agent {
	t.Helper()
	p, err := l.Start(context.Background(), spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return newAgent(t, p)
}

func TestProcessLauncher(t *testing.T) {
	state := t.TempDir()
	stderr := &syncBuffer{}
	l := NewProcess(ProcessOptions{StateDir: state, Stderr: stderr})
	spec := helperSpec(t, "w1")
	spec.DataDir = "/srv/atoll/accounts/acme"
	spec.GPUs = []int{2, 5}
	a := startProcessAgent(t, l, spec)

	if got := a.call("echo round trip"); got != "round trip" {
		t.Fatalf("echo = %q", got)
	}
	var r report
	a.callJSON("report", &r)
	tmp := filepath.Join(state, "tmp", "w1")
	for _, want := range []string{
		"ATOLL_DATA_DIR=/srv/atoll/accounts/acme",
		"CUDA_VISIBLE_DEVICES=2,5",
		"TMPDIR=" + tmp,
	} {
		if !slices.Contains(r.Env, want) {
			t.Errorf("env lacks %s", want)
		}
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("private TMPDIR: %v", err)
	}
	fmt.Fprintln(a.in, "exit 3")
	exit, err := a.wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if exit != (scheduler.Exit{Code: 3}) {
		t.Errorf("exit = %+v, want code 3", exit)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("TMPDIR left after Wait: %v", err)
	}
}

// gone reports whether pid has ended (or is a zombie awaiting its reaper).
func gone(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) != nil
	}
	_, after, _ := strings.Cut(string(data), ") ")
	return strings.HasPrefix(after, "Z")
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProcessKillEndsTheGroup(t *testing.T) {
	a := startProcessAgent(t, NewProcess(ProcessOptions{}), helperSpec(t, "k1"))
	pid, err := strconv.Atoi(a.call("spawn-sleep"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := a.p.Kill(); err != nil {
		t.Fatal(err)
	}
	exit, err := a.wait()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Kill+Wait took %s", d)
	}
	if exit != (scheduler.Exit{Code: -1, Signal: 9}) {
		t.Errorf("exit = %+v, want signal 9", exit)
	}
	waitGone(t, pid)
	if err := a.p.Kill(); err != nil {
		t.Errorf("Kill after Wait: %v", err)
	}
}

func TestProcessWaitEndsLeftovers(t *testing.T) {
	a := startProcessAgent(t, NewProcess(ProcessOptions{}), helperSpec(t, "k2"))
	pid, err := strconv.Atoi(a.call("spawn-sleep"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(a.in, "exit 0")
	if exit, err := a.wait(); err != nil || exit.Code != 0 {
		t.Fatalf("Wait = %+v, %v", exit, err)
	}
	waitGone(t, pid)
}

func TestProcessStartErrors(t *testing.T) {
	l := NewProcess(ProcessOptions{})
	if _, err := l.Start(context.Background(), HostSpec{ID: "x"}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("no args: %v, want ErrInvalidSpec", err)
	}
	if _, err := l.Start(context.Background(), HostSpec{ID: "x", Args: []string{"/nonexistent/agent"}}); err == nil {
		t.Error("missing binary started")
	}
}
