package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// NewLoopVolumes checks that this host can keep accounts' /data as loop
// volumes (root, loop devices, mkfs.ext4 and mount) and returns them; the
// error wraps ErrVolumesUnavailable and says what is missing.
func NewLoopVolumes(dataDir string, quotaBytes int64, owner *Owner, log *slog.Logger) (*LoopVolumes, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if quotaBytes <= 0 {
		return nil, fmt.Errorf("%w: loop volumes need a quota (--data-quota above 0)", ErrVolumesUnavailable)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: mounting loop devices needs root", ErrVolumesUnavailable)
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return nil, fmt.Errorf("%w: no loop devices (/dev/loop-control): %v", ErrVolumesUnavailable, err)
	}
	for _, tool := range []string{"mkfs.ext4", "resize2fs", "e2fsck", "mount", "cp"} {
		if _, err := lookTool(tool); err != nil {
			return nil, fmt.Errorf("%w: %s not found (install the Debian packages e2fsprogs and mount)", ErrVolumesUnavailable, tool)
		}
	}
	if err := probeLoopMount(filepath.Join(dataDir, volumesDir)); err != nil {
		return nil, fmt.Errorf("%w: a test volume could not be made and mounted: %v", ErrVolumesUnavailable, err)
	}
	return &LoopVolumes{dataDir: dataDir, quota: quotaBytes, owner: owner, log: log, mounted: map[string]bool{}}, nil
}

// probeLoopMount makes, mounts and removes a small volume: root in a
// container can have loop devices and still not be allowed to mount.
func probeLoopMount(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	image := filepath.Join(dir, ".probe.ext4")
	mnt := filepath.Join(dir, ".probe")
	defer os.Remove(image)
	defer os.Remove(mnt)
	if err := makeImage(image, 1<<20, false, nil); err != nil {
		return err
	}
	if err := os.Mkdir(mnt, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := mountImage(image, mnt); err != nil {
		return err
	}
	return unmountVolume(mnt)
}

// lookTool finds a system tool on PATH or, where PATH leaves them out (a
// user's PATH often does), in the system's sbin directories, where
// e2fsprogs installs its tools.
func lookTool(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, serr := os.Stat(p); serr == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", err
}

func run(name string, args ...string) error {
	path, err := lookTool(name)
	if err != nil {
		return err
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// makeImage writes a sparse image of size bytes holding an empty ext4
// filesystem whose root belongs to owner.
func makeImage(image string, size int64, journal bool, owner *Owner) error {
	f, err := os.OpenFile(image, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	args := []string{"-q", "-F", "-m", "0", "-L", "atoll-data"}
	if !journal {
		args = append(args, "-O", "^has_journal")
	}
	if owner != nil {
		args = append(args, "-E", fmt.Sprintf("root_owner=%d:%d", owner.UID, owner.GID))
	}
	return run("mkfs.ext4", append(args, image)...)
}

// copyTree copies what src holds into dst, keeping modes, owners, times
// and links (cp -a: the one tool that does all of it).
func copyTree(src, dst string) error {
	return run("cp", "-a", "--", src+"/.", dst+"/")
}

// growImage enlarges an unmounted image and its filesystem to size bytes.
func growImage(image string, size int64) error {
	// resize2fs wants a freshly checked filesystem; -p repairs what is
	// safe to repair without asking (exit status 1: errors corrected).
	if err := run("e2fsck", "-f", "-p", image); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			return err
		}
	}
	if err := os.Truncate(image, size); err != nil {
		return err
	}
	return run("resize2fs", "-f", image)
}

// mountImage mounts image on dir through a loop device, which the kernel
// frees when it is unmounted.
func mountImage(image, dir string) error {
	return run("mount", "-t", "ext4", "-o", "loop,nosuid,nodev", image, dir)
}

// unmountVolume unmounts dir, detaching it where it is still busy.
func unmountVolume(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	return nil
}

// isMountPoint says whether something is mounted on dir: it is on another
// device than its parent.
func isMountPoint(dir string) (bool, error) {
	var st, parent syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil {
		return false, err
	}
	if err := syscall.Lstat(filepath.Dir(dir), &parent); err != nil {
		return false, err
	}
	return st.Dev != parent.Dev, nil
}
