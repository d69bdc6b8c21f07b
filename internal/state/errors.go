package state

import "errors"

var (
	// ErrNotFound is returned when an account, key or run does not exist,
	// or belongs to another account than the one asking.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned when creating an account, key or run whose
	// name or id is already taken.
	ErrExists = errors.New("already exists")
	// ErrInvalidName is returned for an account name that is empty, too
	// long, or uses characters outside [A-Za-z0-9._-].
	ErrInvalidName = errors.New("invalid account name")
	// ErrSchemaTooNew is returned by Open when the database was migrated by
	// a newer atoll than this one.
	ErrSchemaTooNew = errors.New("database schema is newer than this atoll")
)
