package machine

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/atoll-dev/atoll/internal/sandbox/cgroups"
)

func detectCPUAndMemory() (Host, error) {
	h := Host{CPUs: float64(runtime.NumCPU())}
	mem, err := memTotal("/proc/meminfo")
	if err != nil {
		return Host{}, err
	}
	h.MemoryBytes = mem
	// A server in a container with --cpus or --memory gets no more.
	cg := cgroups.OwnLimits()
	if cg.CPUs > 0 && cg.CPUs < h.CPUs {
		h.CPUs = cg.CPUs
	}
	if cg.MemoryBytes > 0 && cg.MemoryBytes < h.MemoryBytes {
		h.MemoryBytes = cg.MemoryBytes
	}
	return h, nil
}

func memTotal(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read memory size: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read memory size: bad MemTotal %q", f[1])
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("read memory size: no MemTotal in %s", path)
}
