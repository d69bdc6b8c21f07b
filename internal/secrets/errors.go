package secrets

import "errors"

var (
	// ErrNotFound is a secret the account does not have.
	ErrNotFound = errors.New("secret not found")
	// ErrInvalid is a secret name, variable name or value that cannot be
	// stored.
	ErrInvalid = errors.New("invalid secret")
	// ErrKeyFile is a key file that is unsafe (open to other users) or
	// damaged.
	ErrKeyFile = errors.New("unusable secrets key file")
)
