//go:build !linux

package sandbox

import (
	"errors"
	"os"
)

// sealedCopy is Linux's alone: elsewhere the runtime runs from its path.
func sealedCopy(string) (*os.File, string, error) { return nil, "", errors.ErrUnsupported }
