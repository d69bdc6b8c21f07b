package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"github.com/moby/sys/mountinfo"
	ocgroups "github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// becomeRunner does for the helper what the agent does for the runner
// when the spec splits the two users (splitUsers): started as uid 0 with
// three capabilities, it empties its bounding set and becomes the
// runner's user, then executes itself again (the bounding set is per
// thread: the new image gets the emptied one), so the helper reports the
// identity user code gets.
func becomeRunner(args []string) error {
	user, rest := "", []string{args[0]}
	for i := 1; i < len(args); i++ {
		switch {
		case args[i] == "--runner-user" && i+1 < len(args):
			user = args[i+1]
			i++
		case args[i] == "--agent-user" && i+1 < len(args):
			i++
		default:
			rest = append(rest, args[i])
		}
	}
	if user == "" {
		return nil
	}
	runtime.LockOSThread()
	var uid, gid int
	if _, err := fmt.Sscanf(user, "%d:%d", &uid, &gid); err != nil {
		return fmt.Errorf("--runner-user %q: %w", user, err)
	}
	last := 40
	if data, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		fmt.Sscan(string(data), &last)
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return err
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return syscall.Exec(exe, rest, os.Environ())
}

// ownCPUCgroup finds this process's own cpu cgroup as the container sees
// it: the runtime mounts the container's cgroup at /sys/fs/cgroup (v2) or
// /sys/fs/cgroup/cpu (v1), and /proc/self/cgroup names the process's
// cgroup by its path in the host's hierarchy, whose mount root is the
// container's. "" where there is none.
func ownCPUCgroup() (dir string, v2 bool) {
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return "", false
	}
	own, err := ocgroups.ParseCgroupFile("/proc/self/cgroup") // controller (v2: "") to path
	if err != nil {
		return "", false
	}
	for _, m := range mounts {
		v2 := m.FSType == "cgroup2"
		controller := "cpu"
		switch {
		case v2 && m.Mountpoint != "/sys/fs/cgroup":
			continue // a hybrid host's hierarchy without controllers
		case v2:
			controller = ""
		case !slices.Contains(strings.Split(m.VFSOptions, ","), "cpu"):
			continue
		}
		path, ok := own[controller]
		if !ok {
			continue
		}
		if rel, err := filepath.Rel(m.Root, path); err == nil && !strings.HasPrefix(rel, "..") {
			return filepath.Join(m.Mountpoint, rel), v2
		}
	}
	return "", false
}
