//go:build !linux && !darwin

package machine

import "runtime"

func detectCPUAndMemory() (Host, error) {
	return Host{CPUs: float64(runtime.NumCPU())}, errNoMemoryDetection
}
