package storage

import (
	"errors"
	"fmt"

	"github.com/dustin/go-humanize"
)

var (
	// ErrInvalidPath marks a path or symlink target that is not acceptable:
	// outside /data, not clean, with "..", or leaving the synced tree.
	ErrInvalidPath = errors.New("invalid path")
	// ErrInvalidManifest marks a manifest or upload stream that breaks the
	// protocol: duplicate entries, a missing parent, content for a file
	// that was not announced.
	ErrInvalidManifest = errors.New("invalid sync")
	// ErrInvalidAccount marks an account name that cannot name a directory.
	ErrInvalidAccount = errors.New("invalid account name")
	// ErrConflict marks local entries that clash with what is stored, such
	// as a file where a directory is stored.
	ErrConflict = errors.New("conflicts with stored data")
	// ErrQuotaExceeded marks a sync that would take an account past its quota.
	ErrQuotaExceeded = errors.New("storage quota exceeded")
	// ErrUnknownSync marks a sync id that does not exist (any more) for the
	// account.
	ErrUnknownSync = errors.New("unknown or expired sync")
	// ErrContentMismatch marks a file whose content did not match its size
	// or hash as announced: it changed while it was being read.
	ErrContentMismatch = errors.New("content does not match")
)

// QuotaError says by how much a sync would exceed an account's quota.
type QuotaError struct {
	Account string
	// Quota, Used and Incoming are bytes: the limit, what the account stores
	// now (less what the sync replaces, plus other syncs in flight), and
	// what the sync adds.
	Quota, Used, Incoming int64
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("%v: the sync adds %s to the %s that account %q stores, over its quota of %s; "+
		"remove data you no longer need (atoll data rm) or ask for a larger quota",
		ErrQuotaExceeded, humanize.IBytes(uint64(e.Incoming)), humanize.IBytes(uint64(max(e.Used, 0))), e.Account, humanize.IBytes(uint64(e.Quota)))
}

func (e *QuotaError) Unwrap() error { return ErrQuotaExceeded }

// ErrVolumesUnavailable marks a host where accounts' /data cannot be kept
// as loop volumes (no root, no loop devices, no mkfs.ext4).
var ErrVolumesUnavailable = errors.New("loop volumes unavailable")
