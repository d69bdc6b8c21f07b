//go:build !linux

package sandbox

import "errors"

// cgroupLayout is empty where there are no cgroups: NewOCI fails before it
// is used.
type cgroupLayout struct {
	v2     bool
	hybrid bool
}

var errNotLinux = errors.Join(ErrUnsupported, errors.New("OCI containers need Linux"))

func detectCgroups() (cgroupLayout, error)           { return cgroupLayout{}, errNotLinux }
func (cgroupLayout) memoryDir(string) string         { return "" }
func (cgroupLayout) cpuDir(string) string            { return "" }
func (cgroupLayout) setCPUQuota(string, int64) error { return errNotLinux }
func (cgroupLayout) swapLimit() bool                 { return false }
func (cgroupLayout) oomKills(string) (int64, bool)   { return 0, false }
func (cgroupLayout) limitHit(string) bool            { return false }
func removeCgroupDir(string) error                   { return nil }
func mountsUnder(string) ([]string, error)           { return nil, nil }
func statDevice(string) (*gpuDevice, error)          { return nil, nil }
