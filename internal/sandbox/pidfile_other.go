//go:build !linux

package sandbox

import (
	"errors"
)

// watchPidFile is never reached where there are no OCI containers: NewOCI
// fails first.
func watchPidFile(string) (*pidFileWatch, error) {
	return nil, errors.ErrUnsupported
}
