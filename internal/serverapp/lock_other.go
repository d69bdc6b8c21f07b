//go:build !unix

package serverapp

import "os"

// tryLock always holds where flock(2) does not exist: one server per data
// directory is then the operator's to keep.
func tryLock(*os.File) (bool, error) { return true, nil }
