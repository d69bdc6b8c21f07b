package sandbox

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/atoll-dev/atoll/internal/scheduler"
)

// adoptOrphans makes this process a child subreaper, where pidfds work
// (Kill signals adopted inits through them): a detached container's init,
// orphaned when the runtime exits, is then reparented to the server
// rather than to the host's init, and the server waits for it.
//
// Every orphan among the server's descendants comes to it from then on,
// not only containers' inits. The others: processes a runtime process
// left when it was itself killed while setting a container up (its
// "runc init" stages; delete --force ends them) and daemons of plain
// process workers, where a server falls back to them (Check then gives
// up being a subreaper, see stopAdopting). Those are not waited for and
// stay zombies until the server exits: waiting for "any child" would
// take the exit statuses of os/exec's children from under it. Build
// sandboxes and network stacks leave none (their runtime runs in the
// foreground and reaps its own; slirp4netns and pasta are waited for).
func adoptOrphans() error {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return fmt.Errorf("no pidfds on this kernel: %w", err)
	}
	unix.Close(fd)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become a child subreaper: %w", err)
	}
	return nil
}

// stopAdopting ends what adoptOrphans began.
func stopAdopting() {
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
}

// adoptInit reads the pid the runtime wrote for a detached container and
// opens a pidfd on it, once sure it is this process's child: the runtime
// has exited, so the init (running, or a zombie nobody else may reap) is
// the server's, and its pid cannot have been given to another process.
func adoptInit(pidFile string) (int, *os.File, error) {
	pid, err := readPidFile(pidFile)
	if err != nil {
		return 0, nil, err
	}
	f := openChild(pid, os.Getpid())
	if f == nil {
		return 0, nil, fmt.Errorf("the container's init (pid %d) is not this server's child", pid)
	}
	return pid, f, nil
}

// waitChild waits for child pid to end, reaps it and maps how it ended: a
// signal gives Code -1 and the signal number. It waits for that pid only,
// never for any child.
func waitChild(pid int) scheduler.Exit {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return scheduler.Exit{Code: -1}
		}
		break
	}
	if ws.Signaled() {
		return scheduler.Exit{Code: -1, Signal: int(ws.Signal())}
	}
	return scheduler.Exit{Code: ws.ExitStatus()}
}
