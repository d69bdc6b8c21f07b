package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"github.com/atoll-dev/atoll/internal/sandbox/cgroups"
)

// hostProbe is what Detect looks at, replaceable in tests.
type hostProbe struct {
	goos     string
	euid     int
	lookPath func(string) (string, error)
	cgroups  func() (cgroups.Layout, error)
}

func realHost() hostProbe {
	return hostProbe{goos: runtime.GOOS, euid: os.Geteuid(), lookPath: exec.LookPath, cgroups: cgroups.Detect}
}

// Detect chooses the sandbox kind. force is the configured choice: "" or
// "auto" to detect, or one of the Kind constants. Detection picks runc when
// it is installed and usable (Linux, running as root, a cgroup memory
// controller), then crun, else KindProcess. A non-empty warning is for
// the server log and `atoll status`: it says when isolation is weak, or
// why a forced runtime will fail. A forced choice is never replaced by a
// weaker one. Only an unknown force is an error.
//
// Rootless runtimes are not used: without root, the runtime cannot apply
// the machine types' cgroup limits on most hosts, so detection falls back
// to processes and says so.
func Detect(force string) (kind, warning string, err error) {
	return detect(force, realHost())
}

const weak = "workers are NOT isolated from the host or from each other, and machine-type limits (CPU, memory, pids) are not enforced"

func detect(force string, h hostProbe) (kind, warning string, err error) {
	switch force {
	case "", "auto":
	case KindProcess:
		return KindProcess, "sandbox process (configured): " + weak, nil
	case KindRunc, KindCrun, KindRunsc:
		if problem := h.unusable(force); problem != "" {
			return force, fmt.Sprintf("sandbox %s (configured) will not work: %s", force, problem), nil
		}
		return force, "", nil
	default:
		return "", "", fmt.Errorf("unknown sandbox %q: want runc, crun, runsc, process or auto", force)
	}
	runcProblem := h.unusable(KindRunc)
	if runcProblem == "" {
		return KindRunc, "", nil
	}
	crunProblem := h.unusable(KindCrun)
	if crunProblem == "" {
		return KindCrun, "", nil
	}
	problem := runcProblem
	if _, err := h.lookPath(KindRunc); err != nil {
		if _, err := h.lookPath(KindCrun); err == nil {
			problem = crunProblem
		}
	}
	return KindProcess, fmt.Sprintf("sandbox process: %s; %s", problem, weak), nil
}

// unusable says why runtime k cannot run workers here, or "".
func (h hostProbe) unusable(k string) string {
	if h.goos != "linux" {
		return "OCI containers need Linux"
	}
	if _, err := h.lookPath(k); err != nil {
		return fmt.Sprintf("%s is not installed (Debian/Ubuntu: apt install %s)", k, k)
	}
	if h.euid != 0 {
		return "the server is not running as root, which the runtime needs to apply cgroup limits"
	}
	cg, err := h.cgroups()
	if err != nil {
		return err.Error()
	}
	if k == KindCrun && cg.Hybrid {
		return "crun does not support hosts with both cgroup v1 and v2 mounted (use runc)"
	}
	return ""
}
