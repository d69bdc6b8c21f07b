package serverapp

import "errors"

// ErrDataDirInUse is returned when another server holds the data
// directory's lock.
var ErrDataDirInUse = errors.New("the data directory is in use by another atoll server")
