//go:build !linux

package sandbox

import (
	"errors"
	"os"

	"github.com/atoll-dev/atoll/internal/scheduler"
)

// adoptOrphans is Linux's alone: elsewhere containers run in the
// runtime's foreground.
func adoptOrphans() error { return errors.ErrUnsupported }

func stopAdopting() {}

func adoptInit(string) (int, *os.File, error) { return 0, nil, errors.ErrUnsupported }

func waitChild(int) scheduler.Exit { return scheduler.Exit{Code: -1} }
