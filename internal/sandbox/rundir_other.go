//go:build !linux

package sandbox

import "errors"

// memoryRunDir is Linux's alone: elsewhere the state stays on disk.
func memoryRunDir(string) (string, error) { return "", errors.ErrUnsupported }
