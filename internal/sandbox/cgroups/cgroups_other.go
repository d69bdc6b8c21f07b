//go:build !linux

package cgroups

import "errors"

var errNotLinux = errors.Join(ErrUnsupported, errors.New("cgroups need Linux"))

// Detect fails where there are no cgroups.
func Detect() (Layout, error) { return Layout{}, errNotLinux }

// SetCPUQuota fails where there are no cgroups.
func (Layout) SetCPUQuota(string, int64, uint64) error { return errNotLinux }

// SeparateAgent fails where there are no cgroups.
func (Layout) SeparateAgent(string, int, CPUShare, CPUShare) error { return errNotLinux }

// SwapLimit is false where there are no cgroups.
func (Layout) SwapLimit() bool { return false }

// OOMKills knows no count where there are no cgroups.
func (Layout) OOMKills(string) (int64, bool) { return 0, false }

// LimitHit is false where there are no cgroups.
func (Layout) LimitHit(string) bool { return false }

// Remove has nothing to remove where there are no cgroups.
func Remove(string) error { return nil }

// OwnLimits finds no limits where there are no cgroups.
func OwnLimits() Limits { return Limits{} }
