package state

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// SealedSecret is one secret as stored: its value sealed by the server,
// which alone holds the key.
type SealedSecret struct {
	Account string
	Name    string
	Sealed  []byte
	Updated time.Time
}

// PutSecret creates or replaces a secret; the account is created if
// missing.
func (s *Store) PutSecret(ctx context.Context, sec SealedSecret) error {
	if _, err := s.EnsureAccount(ctx, sec.Account); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO secrets (account, name, sealed, updated) VALUES (?, ?, ?, ?)
		ON CONFLICT (account, name) DO UPDATE SET sealed = excluded.sealed, updated = excluded.updated`,
		sec.Account, sec.Name, sec.Sealed, toDB(sec.Updated))
	if err != nil {
		return fmt.Errorf("put secret %q: %w", sec.Name, err)
	}
	return nil
}

// GetSecret returns the account's secret; ErrNotFound if it has none of
// that name.
func (s *Store) GetSecret(ctx context.Context, account, name string) (SealedSecret, error) {
	sec := SealedSecret{Account: account, Name: name}
	var updated sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT sealed, updated FROM secrets WHERE account = ? AND name = ?`, account, name).
		Scan(&sec.Sealed, &updated)
	if err == sql.ErrNoRows {
		return SealedSecret{}, fmt.Errorf("secret %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return SealedSecret{}, fmt.Errorf("secret %q: %w", name, err)
	}
	sec.Updated = fromDB(updated)
	return sec, nil
}

// ListSecrets returns the account's secrets by name.
func (s *Store) ListSecrets(ctx context.Context, account string) ([]SealedSecret, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, sealed, updated FROM secrets WHERE account = ? ORDER BY name`, account)
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	defer rows.Close()
	var out []SealedSecret
	for rows.Next() {
		sec := SealedSecret{Account: account}
		var updated sql.NullInt64
		if err := rows.Scan(&sec.Name, &sec.Sealed, &updated); err != nil {
			return nil, fmt.Errorf("list secrets: %w", err)
		}
		sec.Updated = fromDB(updated)
		out = append(out, sec)
	}
	return out, rows.Err()
}

// DeleteSecret removes a secret; ErrNotFound if there was none.
func (s *Store) DeleteSecret(ctx context.Context, account, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM secrets WHERE account = ? AND name = ?`, account, name)
	if err != nil {
		return fmt.Errorf("delete secret %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("secret %q: %w", name, ErrNotFound)
	}
	return nil
}
