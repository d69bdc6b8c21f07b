//go:build !linux

package storage

import (
	"fmt"
	"log/slog"
)

// NewLoopVolumes reports that loop volumes need Linux.
func NewLoopVolumes(string, int64, *Owner, *slog.Logger) (*LoopVolumes, error) {
	return nil, fmt.Errorf("%w: loop volumes need Linux", ErrVolumesUnavailable)
}

func makeImage(string, int64, bool, *Owner) error { return ErrVolumesUnavailable }
func growImage(string, int64) error               { return ErrVolumesUnavailable }
func mountImage(string, string) error             { return ErrVolumesUnavailable }
func unmountVolume(string) error                  { return nil }
func isMountPoint(string) (bool, error)           { return false, nil }
func copyTree(string, string) error               { return ErrVolumesUnavailable }
