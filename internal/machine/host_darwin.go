package machine

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

func detectCPUAndMemory() (Host, error) {
	mem, err := unix.SysctlUint64("hw.memsize")
	if err != nil {
		return Host{}, fmt.Errorf("read memory size: %w", err)
	}
	return Host{CPUs: float64(runtime.NumCPU()), MemoryBytes: int64(mem)}, nil
}
