//go:build !linux

package workerproto

import (
	"io"
	"os"
)

// GrowPipe does nothing where pipes' capacity cannot be set.
func GrowPipe(*os.File) {}

// splice is never handled where there is no splice(2): the caller copies.
func splice(io.Writer, io.Reader, int64) (int64, bool, error) { return 0, false, nil }

// spliceFile is never handled where there is no splice(2): the caller
// copies.
func spliceFile(io.Writer, *os.File, int64) (int64, bool, error) { return 0, false, nil }
