package sandbox

import (
	"errors"
	"fmt"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// mountsUnder lists this process's mount points inside dir.
func mountsUnder(dir string) ([]string, error) {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(mounts))
	for _, m := range mounts {
		out = append(out, m.Mountpoint)
	}
	return out, nil
}

// statDevice describes a character device node, or returns nil, nil when
// it does not exist.
func statDevice(path string) (*gpuDevice, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return nil, fmt.Errorf("%s is not a character device", path)
	}
	return &gpuDevice{
		path:  path,
		major: int64(unix.Major(uint64(st.Rdev))),
		minor: int64(unix.Minor(uint64(st.Rdev))),
		mode:  st.Mode,
	}, nil
}
