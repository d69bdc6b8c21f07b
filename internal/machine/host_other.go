//go:build !linux && !darwin

package machine

import (
	"errors"
	"runtime"
)

// errNoMemoryDetection is returned where the platform gives no portable way
// to read the memory size; the configuration's capacity.memory fills in.
var errNoMemoryDetection = errors.New("memory size detection is not supported on this platform; set capacity.memory in the configuration")

func detectCPUAndMemory() (Host, error) {
	return Host{CPUs: float64(runtime.NumCPU())}, errNoMemoryDetection
}
