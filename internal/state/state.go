// Package state owns the server's durable records: accounts, API keys (by
// hash, never the secret), and run history with its output lines. They live
// in one SQLite file in the server's data directory, opened with a pure-Go
// driver, so they survive restarts.
//
// The package stores and fetches; it does not decide. It never hashes or
// checks secrets (that is internal/auth) and never chooses what a run's
// outcome is (that is the server and scheduler). Every read that could cross
// accounts takes the account and answers ErrNotFound for another's records.
package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Store is the open database. It is safe for concurrent use.
type Store struct {
	db  *sql.DB
	log *slog.Logger
	now func() time.Time
	// Statements run on every call are prepared once: compiling the SQL
	// is about half the cost of a point lookup.
	keyByID, touchKey     *sql.Stmt
	createRun, upsertRun  *sql.Stmt
	lastLogSeq, insertLog *sql.Stmt
}

// Option configures Open.
type Option func(*Store)

// WithLogger sets the logger; by default nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) { s.log = l }
}

// WithClock replaces time.Now for the timestamps the store fills in itself
// (created, revoked, last used, finished). Tests use it.
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// busyTimeout is how long a writer waits for another writer (the CLI and the
// server may share the file) before SQLITE_BUSY.
const busyTimeout = 5 * time.Second

// Open opens the database at path, creating the file (mode 0600, since it
// holds key hashes) and its directory when missing, and applies any
// migrations it lacks.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	s := &Store{log: slog.New(slog.DiscardHandler), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	// The driver splits its own parameters off at the first '?'.
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("open state %q: path must not contain '?'", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	// Created here rather than by SQLite so the mode is 0600 whatever the
	// umask; SQLite gives the -wal and -shm files the same mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	f.Close()

	// Pragmas go in the DSN because busy_timeout and foreign_keys are per
	// connection and database/sql opens connections at will. _txlock makes
	// every transaction BEGIN IMMEDIATE: a deferred transaction that reads
	// and then writes can fail with SQLITE_BUSY without waiting.
	dsn := fmt.Sprintf("%s?_busy_timeout=%d&_journal_mode=WAL&_synchronous=NORMAL&_foreign_keys=1&_txlock=immediate",
		path, busyTimeout.Milliseconds())
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	s.db = db
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	if err := s.prepare(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&s.keyByID, `SELECT ` + keyColumns + ` FROM keys WHERE id = ?`},
		{&s.touchKey, `UPDATE keys SET last_used = ? WHERE id = ?`},
		{&s.createRun, `INSERT INTO runs (` + runColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&s.upsertRun, `INSERT INTO runs (` + runColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT(id) DO UPDATE SET env_key = excluded.env_key, started_at = excluded.started_at,
			finished_at = excluded.finished_at, outcome = excluded.outcome, exit_status = excluded.exit_status,
			worker_id = excluded.worker_id`},
		{&s.lastLogSeq, `SELECT COALESCE(MAX(seq), 0) FROM run_logs WHERE run_id = ?`},
		{&s.insertLog, `INSERT INTO run_logs (run_id, seq, stream, at, data) VALUES (?, ?, ?, ?, ?)`},
	} {
		st, err := s.db.PrepareContext(ctx, p.query)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", p.query, err)
		}
		*p.stmt = st
	}
	return nil
}

// Close closes the database. Calls after Close fail.
func (s *Store) Close() error {
	for _, st := range []*sql.Stmt{s.keyByID, s.touchKey, s.createRun, s.upsertRun, s.lastLogSeq, s.insertLog} {
		st.Close()
	}
	return s.db.Close()
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("schema_version: %w", err)
	}
	var have int
	err = tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&have)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return fmt.Errorf("schema_version: %w", err)
		}
	case err != nil:
		return fmt.Errorf("schema_version: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("%w: database has version %d, this atoll knows %d", ErrSchemaTooNew, have, len(migrations))
	}
	for i := have; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	if have == len(migrations) {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(migrations)); err != nil {
		return fmt.Errorf("schema_version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.log.Info("state schema migrated", "from", have, "to", len(migrations))
	return nil
}

// sqliteCode is the extended result code of a driver error, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

func isUniqueViolation(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || c == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

func isForeignKeyViolation(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// Timestamps are stored as integer nanoseconds since the Unix epoch (UTC):
// they sort, compare in SQL, and round-trip exactly. NULL is the zero Time.

func toDB(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func fromDB(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}
