package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// runnerProcAttr makes the kernel kill the runner if the agent dies first,
// and starts it as user runner when set (the agent must then be uid 0
// with CAP_SETUID and CAP_SETGID: the runner loses every capability as
// its uids all leave 0).
func runnerProcAttr(runner *User) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if runner != nil {
		a.Credential = &syscall.Credential{Uid: runner.UID, Gid: runner.GID, Groups: []uint32{}}
	}
	return a
}

// protectAgent makes the agent non-dumpable: a process of its own user
// (the runner, where the sandbox cannot give the two different users)
// can then neither ptrace it nor open its /proc/<pid>/fd, mem or environ,
// which the kernel checks as ptrace access.
func protectAgent() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("make the agent non-dumpable: %w", err)
	}
	return nil
}

// dropTo makes the agent user u on every thread (Go's Set* calls apply to
// all of them). Leaving uid 0 for a non-zero uid clears the permitted and
// effective capabilities; that is checked, not assumed.
func dropTo(u User) error {
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("drop to %d:%d: setgroups: %w", u.UID, u.GID, err)
	}
	if err := syscall.Setresgid(int(u.GID), int(u.GID), int(u.GID)); err != nil {
		return fmt.Errorf("drop to %d:%d: setresgid: %w", u.UID, u.GID, err)
	}
	if err := syscall.Setresuid(int(u.UID), int(u.UID), int(u.UID)); err != nil {
		return fmt.Errorf("drop to %d:%d: setresuid: %w", u.UID, u.GID, err)
	}
	// A change of credentials makes the process dumpable again.
	if err := protectAgent(); err != nil {
		return err
	}
	return checkNoCapabilities()
}

// checkNoCapabilities fails unless the process holds no capability.
func checkNoCapabilities() error {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return fmt.Errorf("check capabilities: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "CapPrm" && name != "CapEff") {
			continue
		}
		if v := strings.Trim(strings.TrimSpace(value), "0"); v != "" {
			return fmt.Errorf("the agent still holds capabilities after dropping privileges (%s %s)", name, strings.TrimSpace(value))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("check capabilities: %w", err)
	}
	return nil
}

// startWithoutBoundingSet starts cmd from a thread whose capability
// bounding set is empty, so that the runner can never regain a capability
// (the set is per thread and inherited by the child; the agent needs
// CAP_SETPCAP to empty it). The thread stays locked to a goroutine that
// never returns: the runner's parent-death signal fires when the thread
// that forked it ends, not the agent.
func startWithoutBoundingSet(cmd *exec.Cmd) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		for c := 0; c <= lastCap(); c++ {
			err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
			if errors.Is(err, unix.EINVAL) && c > 0 {
				break // beyond the capabilities this kernel (gVisor's, say) has
			}
			if err != nil {
				started <- fmt.Errorf("empty the runner's capability bounding set: %w", err)
				return
			}
		}
		started <- cmd.Start()
		select {} // see above: this thread is the runner's parent
	}()
	return <-started
}

// lastCap is the highest capability this kernel knows.
func lastCap() int {
	data, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return unix.CAP_LAST_CAP
	}
	n := 0
	if _, err := fmt.Sscan(string(data), &n); err != nil {
		return unix.CAP_LAST_CAP
	}
	return n
}
