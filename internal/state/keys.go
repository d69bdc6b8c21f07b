package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Account is a tenant: it owns keys, runs, workers and data.
type Account struct {
	Name    string
	Created time.Time
}

// maxAccountName bounds account names; they may become path components.
const maxAccountName = 64

// ValidateAccountName reports, wrapping ErrInvalidName, why name cannot be
// an account name. Names are 1 to 64 of [A-Za-z0-9._-], not starting with
// '.' or '-', so they are safe as file names and command-line arguments.
func ValidateAccountName(name string) error {
	if name == "" || len(name) > maxAccountName {
		return fmt.Errorf("%w %q: must be 1 to %d characters", ErrInvalidName, name, maxAccountName)
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("%w %q: must not start with '.' or '-'", ErrInvalidName, name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("%w %q: only letters, digits, '.', '_' and '-' are allowed", ErrInvalidName, name)
		}
	}
	return nil
}

// CreateAccount adds an account; ErrExists if the name is taken.
func (s *Store) CreateAccount(ctx context.Context, name string) (Account, error) {
	if err := ValidateAccountName(name); err != nil {
		return Account{}, err
	}
	a := Account{Name: name, Created: s.now().UTC()}
	_, err := s.db.ExecContext(ctx, `INSERT INTO accounts (name, created) VALUES (?, ?)`, a.Name, toDB(a.Created))
	if isUniqueViolation(err) {
		return Account{}, fmt.Errorf("create account %q: %w", name, ErrExists)
	}
	if err != nil {
		return Account{}, fmt.Errorf("create account %q: %w", name, err)
	}
	return a, nil
}

// EnsureAccount returns the account, creating it if missing.
func (s *Store) EnsureAccount(ctx context.Context, name string) (Account, error) {
	if err := ValidateAccountName(name); err != nil {
		return Account{}, err
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO accounts (name, created) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`,
		name, toDB(s.now().UTC()))
	if err != nil {
		return Account{}, fmt.Errorf("ensure account %q: %w", name, err)
	}
	var created sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT created FROM accounts WHERE name = ?`, name).Scan(&created); err != nil {
		return Account{}, fmt.Errorf("ensure account %q: %w", name, err)
	}
	return Account{Name: name, Created: fromDB(created)}, nil
}

// Key is a stored API key. The secret itself is never stored; SecretHash is
// whatever internal/auth derives from it.
type Key struct {
	ID         string
	Account    string
	SecretHash []byte
	Label      string
	Created    time.Time
	// LastUsed is zero if the key was never used.
	LastUsed time.Time
	// RevokedAt is zero while the key is valid.
	RevokedAt time.Time
}

// Revoked reports whether the key has been revoked.
func (k Key) Revoked() bool { return !k.RevokedAt.IsZero() }

// InsertKey stores a new key. The account must exist (ErrNotFound
// otherwise) and the id be new (ErrExists otherwise). A zero Created is set
// to now.
func (s *Store) InsertKey(ctx context.Context, k Key) error {
	if k.Created.IsZero() {
		k.Created = s.now()
	}
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO keys (id, account, secret_hash, label, created, last_used, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.Account, k.SecretHash, k.Label, toDB(k.Created), toDB(k.LastUsed), toDB(k.RevokedAt))
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("insert key %s: %w", k.ID, ErrExists)
	case isForeignKeyViolation(err):
		return fmt.Errorf("insert key %s: account %q: %w", k.ID, k.Account, ErrNotFound)
	case err != nil:
		return fmt.Errorf("insert key %s: %w", k.ID, err)
	}
	return nil
}

const keyColumns = `id, account, secret_hash, label, created, last_used, revoked_at`

func scanKey(row interface{ Scan(...any) error }) (Key, error) {
	var k Key
	var created, lastUsed, revokedAt sql.NullInt64
	if err := row.Scan(&k.ID, &k.Account, &k.SecretHash, &k.Label, &created, &lastUsed, &revokedAt); err != nil {
		return Key{}, err
	}
	k.Created, k.LastUsed, k.RevokedAt = fromDB(created), fromDB(lastUsed), fromDB(revokedAt)
	return k, nil
}

// KeyByID returns the key with that id, revoked or not; ErrNotFound if none.
func (s *Store) KeyByID(ctx context.Context, id string) (Key, error) {
	// Every RPC does this lookup. A cancellable context costs database/sql
	// a watcher goroutine per query, about as much as the lookup itself,
	// and buys nothing here: a WAL reader never waits for writers.
	k, err := scanKey(s.keyByID.QueryRowContext(context.WithoutCancel(ctx), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, fmt.Errorf("key %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Key{}, fmt.Errorf("key %s: %w", id, err)
	}
	return k, nil
}

// ListKeys returns the keys of account, or of every account when account is
// empty, oldest first. Revoked keys are included.
func (s *Store) ListKeys(ctx context.Context, account string) ([]Key, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT `+keyColumns+` FROM keys WHERE ? = '' OR account = ? ORDER BY created, id`, account, account)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	defer rows.Close()
	var keys []Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return keys, nil
}

// RevokeKey marks the key revoked now; ErrNotFound if there is no such key.
// Revoking a revoked key succeeds and keeps the first revocation time.
func (s *Store) RevokeKey(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx,
		`UPDATE keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`, toDB(s.now()), id)
	if err != nil {
		return fmt.Errorf("revoke key %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("revoke key %s: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("revoke key %s: %w", id, ErrNotFound)
	}
	return nil
}

// TouchKey records that the key was used now; ErrNotFound if there is no
// such key.
func (s *Store) TouchKey(ctx context.Context, id string) error {
	res, err := s.touchKey.ExecContext(ctx, toDB(s.now()), id)
	if err != nil {
		return fmt.Errorf("touch key %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("touch key %s: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("touch key %s: %w", id, ErrNotFound)
	}
	return nil
}
