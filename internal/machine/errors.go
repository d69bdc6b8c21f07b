package machine

import "errors"

// ErrUnknownType is returned for a machine type name the catalog lacks.
var ErrUnknownType = errors.New("unknown machine type")

// ErrNeverFits is returned for a machine type that needs more than this host
// has in total, so waiting would never help.
var ErrNeverFits = errors.New("machine type can never fit this host")

// ErrNoCapacity is returned when a machine type could fit this host but not
// enough is free now (or before the caller stopped waiting).
var ErrNoCapacity = errors.New("no capacity")

// ErrInvalidConfig is returned for a configuration file that cannot be used.
var ErrInvalidConfig = errors.New("invalid machine configuration")

// ErrGPUDetection is returned by DetectHost when the CPU and memory were
// detected but the GPU inventory could not be (nvidia-smi failed).
var ErrGPUDetection = errors.New("gpu detection failed")
