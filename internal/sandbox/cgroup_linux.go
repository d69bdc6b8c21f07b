package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroupLayout is how this host mounts cgroups. On cgroup v1 (and hybrid
// hosts, where v2 is mounted beside v1 without controllers) the memory and
// cpu controllers each have their own hierarchy; on v2 there is one.
type cgroupLayout struct {
	v2         bool
	hybrid     bool   // v1 controllers plus an empty v2 hierarchy
	memoryRoot string // mount point of the hierarchy with the memory controller
	cpuRoot    string // mount point of the hierarchy with the cpu controller, if any
}

func detectCgroups() (cgroupLayout, error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return cgroupLayout{v2: true, memoryRoot: "/sys/fs/cgroup", cpuRoot: "/sys/fs/cgroup"}, nil
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return cgroupLayout{}, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	var l cgroupLayout
	for _, m := range parseMountinfo(data) {
		switch m.fstype {
		case "cgroup2":
			l.hybrid = true
		case "cgroup":
			for _, o := range strings.Split(m.superOptions, ",") {
				switch {
				case o == "memory" && l.memoryRoot == "":
					l.memoryRoot = m.mountPoint
				case o == "cpu" && l.cpuRoot == "":
					l.cpuRoot = m.mountPoint
				}
			}
		}
	}
	if l.memoryRoot == "" {
		return cgroupLayout{}, fmt.Errorf("%w: no cgroup memory controller is mounted", ErrUnsupported)
	}
	return l, nil
}

// memoryDir is the host directory of a cgroup path's memory cgroup.
func (l cgroupLayout) memoryDir(cgroupsPath string) string {
	return filepath.Join(l.memoryRoot, cgroupsPath)
}

// cpuDir is the host directory of a cgroup path's cpu cgroup, or "" where
// no cpu controller is mounted.
func (l cgroupLayout) cpuDir(cgroupsPath string) string {
	if l.cpuRoot == "" {
		return ""
	}
	return filepath.Join(l.cpuRoot, cgroupsPath)
}

// setCPUQuota sets the CFS quota of the cpu cgroup in dir, per cpuPeriod
// (the period every worker's spec sets), by writing its file as the
// runtime would: a file write, not a runtime process, so it costs
// microseconds.
func (l cgroupLayout) setCPUQuota(dir string, quota int64) error {
	if dir == "" {
		return errors.New("no cgroup cpu controller is mounted")
	}
	file, value := "cpu.cfs_quota_us", strconv.FormatInt(quota, 10)
	if l.v2 {
		file, value = "cpu.max", fmt.Sprintf("%d %d", quota, cpuPeriod)
	}
	// O_WRONLY without O_CREATE: a removed cgroup is an error, not a
	// new file.
	f, err := os.OpenFile(filepath.Join(dir, file), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	return errors.Join(err, f.Close())
}

// swapLimit reports whether memory plus swap can be limited. On v1 that
// needs swap accounting (memory.memsw.*); on v2 the runtime writes
// memory.swap.max and skips it where swap is not accounted.
func (l cgroupLayout) swapLimit() bool {
	if l.v2 {
		return true
	}
	_, err := os.Stat(filepath.Join(l.memoryRoot, "memory.memsw.limit_in_bytes"))
	return err == nil
}

// oomKills returns how many processes the kernel killed in the cgroup for
// exceeding its memory limit. ok is false when the cgroup or the counter
// does not exist (v1 before Linux 4.13 keeps none).
func (l cgroupLayout) oomKills(dir string) (n int64, ok bool) {
	file := "memory.oom_control"
	if l.v2 {
		file = "memory.events"
	}
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0, false
	}
	return keyedValue(data, "oom_kill")
}

// limitHit reports whether the cgroup ever failed to charge memory at its
// limit (v1 failcnt), for kernels without an OOM kill counter.
func (l cgroupLayout) limitHit(dir string) bool {
	for _, f := range []string{"memory.memsw.failcnt", "memory.failcnt"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64); err == nil && n > 0 {
			return true
		}
	}
	return false
}

// keyedValue reads "key value" lines.
func keyedValue(data []byte, key string) (int64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, found := strings.Cut(sc.Text(), " ")
		if found && k == key {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// removeCgroupDir removes an empty cgroup made for a worker.
func removeCgroupDir(dir string) error {
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
}

type mountEntry struct {
	mountPoint   string
	fstype       string
	superOptions string
}

// parseMountinfo reads /proc/self/mountinfo lines:
// id parent maj:min root mountpoint options [optional...] - fstype source superoptions
func parseMountinfo(data []byte) []mountEntry {
	var out []mountEntry
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		out = append(out, mountEntry{mountPoint: unescapeMount(f[4]), fstype: g[0], superOptions: g[2]})
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder lists this process's mount points inside dir.
func mountsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range parseMountinfo(data) {
		if isUnder(m.mountPoint, dir) {
			out = append(out, m.mountPoint)
		}
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
