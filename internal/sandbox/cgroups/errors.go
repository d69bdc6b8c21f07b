package cgroups

import "errors"

var (
	// ErrUnsupported is returned by Detect where no cgroup memory
	// controller is mounted, or on a platform without cgroups.
	ErrUnsupported = errors.New("cgroups not supported on this host")
	// ErrNoCPUController is returned by SetCPUQuota where no cgroup cpu
	// controller is mounted.
	ErrNoCPUController = errors.New("no cgroup cpu controller is mounted")
)
