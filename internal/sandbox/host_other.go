//go:build !linux

package sandbox

// Where there are no OCI containers, NewOCI fails before these are used.
func mountsUnder(string) ([]string, error)  { return nil, nil }
func statDevice(string) (*gpuDevice, error) { return nil, nil }
