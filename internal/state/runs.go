package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Outcome is how a run ended. The empty outcome means it has not finished.
type Outcome string

// Outcomes a run can end with. The set is open: the store keeps whatever
// the server records.
const (
	OutcomeOK          Outcome = "ok"
	OutcomeError       Outcome = "error"        // the function raised
	OutcomeCrashed     Outcome = "crashed"      // the runner or worker died
	OutcomeOOM         Outcome = "oom"          // killed for exceeding memory
	OutcomeCancelled   Outcome = "cancelled"    // the caller went away or cancelled
	OutcomeBuildFailed Outcome = "build_failed" // the environment could not be built
	OutcomeTimeout     Outcome = "timeout"      // waited too long for capacity
	OutcomeTimedOut    Outcome = "timed_out"    // ran past its timeout and was stopped
	// OutcomeInterrupted marks runs the server was still tracking when it
	// stopped; see InterruptUnfinishedRuns.
	OutcomeInterrupted Outcome = "interrupted"
)

// Run is one call of a function, from queueing to its end.
type Run struct {
	ID          string
	Account     string
	Function    string
	MachineType string
	EnvKey      string
	QueuedAt    time.Time
	// StartedAt is zero until a worker takes the run.
	StartedAt time.Time
	// FinishedAt is zero, and Outcome empty, until the run ends.
	FinishedAt time.Time
	Outcome    Outcome
	// ExitStatus is the runner's exit status, nil when it did not exit
	// (still running, or it never started).
	ExitStatus *int
	WorkerID   string
	// CallID is the call this run is an attempt of (its first attempt's
	// run id; empty for a first attempt), Attempt its number from 1 (0
	// where the server did not say).
	CallID  string
	Attempt int
}

// Finished reports whether the run has ended.
func (r Run) Finished() bool { return !r.FinishedAt.IsZero() }

// Stream names where a log line came from.
type Stream string

// Streams of a run's output.
const (
	StreamStdout Stream = "stdout"
	StreamStderr Stream = "stderr"
	// StreamSystem is atoll's own lines: environment build output, worker
	// start, the reason a worker died.
	StreamSystem Stream = "system"
)

// LogLine is one chunk of a run's output.
type LogLine struct {
	// Seq orders a run's lines from 1; AppendLogs assigns it.
	Seq    int64
	Stream Stream
	At     time.Time
	Data   string
}

// CreateRun records a queued run. The account must exist (ErrNotFound
// otherwise) and the id be new (ErrExists otherwise). A zero QueuedAt is
// set to now.
func (s *Store) CreateRun(ctx context.Context, r Run) error {
	if r.QueuedAt.IsZero() {
		r.QueuedAt = s.now()
	}
	var exit any
	if r.ExitStatus != nil {
		exit = *r.ExitStatus
	}
	_, err := s.createRun.ExecContext(ctx,
		r.ID, r.Account, r.Function, r.MachineType, r.EnvKey,
		toDB(r.QueuedAt), toDB(r.StartedAt), toDB(r.FinishedAt), string(r.Outcome), exit, r.WorkerID, r.CallID, r.Attempt)
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("create run %s: %w", r.ID, ErrExists)
	case isForeignKeyViolation(err):
		return fmt.Errorf("create run %s: account %q: %w", r.ID, r.Account, ErrNotFound)
	case err != nil:
		return fmt.Errorf("create run %s: %w", r.ID, err)
	}
	return nil
}

// RunRecord is a run's latest state, with output lines to add to it.
type RunRecord struct {
	Run  Run
	Logs []LogLine
}

// SaveRuns writes records in one transaction: each run is inserted, or
// updated to the record's times, outcome, exit status, worker and
// environment, and its lines are appended. A recorder that batches calls
// pays one transaction for many runs.
func (s *Store) SaveRuns(ctx context.Context, records []RunRecord) error {
	if len(records) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("save runs: %w", err)
	}
	defer tx.Rollback()
	upsert := tx.StmtContext(ctx, s.upsertRun)
	for _, rec := range records {
		r := rec.Run
		if r.QueuedAt.IsZero() {
			r.QueuedAt = s.now()
		}
		var exit any
		if r.ExitStatus != nil {
			exit = *r.ExitStatus
		}
		_, err := upsert.ExecContext(ctx,
			r.ID, r.Account, r.Function, r.MachineType, r.EnvKey,
			toDB(r.QueuedAt), toDB(r.StartedAt), toDB(r.FinishedAt), string(r.Outcome), exit, r.WorkerID, r.CallID, r.Attempt)
		if isForeignKeyViolation(err) {
			return fmt.Errorf("save run %s: account %q: %w", r.ID, r.Account, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("save run %s: %w", r.ID, err)
		}
		if err := s.appendLogsTx(ctx, tx, r.ID, rec.Logs); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("save runs: %w", err)
	}
	return nil
}

// InterruptUnfinishedRuns ends every run that has not finished with
// OutcomeInterrupted. The server calls it at start: runs it was tracking
// when it stopped will never finish, and would otherwise never be pruned.
func (s *Store) InterruptUnfinishedRuns(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE runs SET finished_at = ?, outcome = ? WHERE finished_at IS NULL`,
		toDB(s.now()), string(OutcomeInterrupted))
	if err != nil {
		return 0, fmt.Errorf("interrupt unfinished runs: %w", err)
	}
	return res.RowsAffected()
}

const runColumns = `id, account, function, machine_type, env_key, queued_at, started_at, finished_at, outcome, exit_status, worker_id, call_id, attempt`

func scanRun(row interface{ Scan(...any) error }) (Run, error) {
	var r Run
	var queued, started, finished, exit sql.NullInt64
	var outcome string
	err := row.Scan(&r.ID, &r.Account, &r.Function, &r.MachineType, &r.EnvKey,
		&queued, &started, &finished, &outcome, &exit, &r.WorkerID, &r.CallID, &r.Attempt)
	if err != nil {
		return Run{}, err
	}
	r.QueuedAt, r.StartedAt, r.FinishedAt = fromDB(queued), fromDB(started), fromDB(finished)
	r.Outcome = Outcome(outcome)
	if exit.Valid {
		v := int(exit.Int64)
		r.ExitStatus = &v
	}
	return r, nil
}

// GetRun returns the account's run with that id. A run of another account
// is ErrNotFound, exactly like a missing one.
func (s *Store) GetRun(ctx context.Context, account, id string) (Run, error) {
	r, err := scanRun(s.db.QueryRowContext(ctx,
		`SELECT `+runColumns+` FROM runs WHERE id = ? AND account = ?`, id, account))
	if errors.Is(err, sql.ErrNoRows) {
		return Run{}, fmt.Errorf("run %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Run{}, fmt.Errorf("run %s: %w", id, err)
	}
	return r, nil
}

// ListRuns returns the account's runs, newest first, at most limit of them
// (all when limit <= 0).
func (s *Store) ListRuns(ctx context.Context, account string, limit int) ([]Run, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT `+runColumns+` FROM runs WHERE account = ? ORDER BY queued_at DESC, rowid DESC LIMIT ?`,
		account, limit)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var runs []Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list runs: %w", err)
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	return runs, nil
}

// AppendLogs adds lines to the end of a run's output in one transaction,
// numbering them after the lines already stored. Their Seq is ignored. A
// zero At is set to now. ErrNotFound if the run does not exist.
func (s *Store) AppendLogs(ctx context.Context, runID string, lines []LogLine) error {
	if len(lines) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("append logs %s: %w", runID, err)
	}
	defer tx.Rollback()
	if err := s.appendLogsTx(ctx, tx, runID, lines); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("append logs %s: %w", runID, err)
	}
	return nil
}

func (s *Store) appendLogsTx(ctx context.Context, tx *sql.Tx, runID string, lines []LogLine) error {
	if len(lines) == 0 {
		return nil
	}
	var last int64
	if err := tx.StmtContext(ctx, s.lastLogSeq).QueryRowContext(ctx, runID).Scan(&last); err != nil {
		return fmt.Errorf("append logs %s: %w", runID, err)
	}
	stmt := tx.StmtContext(ctx, s.insertLog)
	now := s.now()
	for i, l := range lines {
		at := l.At
		if at.IsZero() {
			at = now
		}
		_, err := stmt.ExecContext(ctx, runID, last+int64(i)+1, string(l.Stream), toDB(at), []byte(l.Data))
		if isForeignKeyViolation(err) {
			return fmt.Errorf("append logs %s: run: %w", runID, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("append logs %s: %w", runID, err)
		}
	}
	return nil
}

// Logs returns the output of the account's run, in order. A run of another
// account is ErrNotFound, exactly like a missing one.
func (s *Store) Logs(ctx context.Context, account, runID string) ([]LogLine, error) {
	// One read transaction, so the ownership check and the lines agree
	// even if the run is pruned in between.
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("logs %s: %w", runID, err)
	}
	defer tx.Rollback()
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM runs WHERE id = ? AND account = ?`, runID, account).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("logs %s: run: %w", runID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("logs %s: %w", runID, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT seq, stream, at, data FROM run_logs WHERE run_id = ? ORDER BY seq`, runID)
	if err != nil {
		return nil, fmt.Errorf("logs %s: %w", runID, err)
	}
	defer rows.Close()
	var lines []LogLine
	for rows.Next() {
		var l LogLine
		var stream string
		var at sql.NullInt64
		var data []byte
		if err := rows.Scan(&l.Seq, &stream, &at, &data); err != nil {
			return nil, fmt.Errorf("logs %s: %w", runID, err)
		}
		l.Stream, l.At, l.Data = Stream(stream), fromDB(at), string(data)
		lines = append(lines, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("logs %s: %w", runID, err)
	}
	return lines, nil
}

// PruneRuns deletes finished runs that finished before olderThan, with their
// output, and reports how many runs went. Unfinished runs are kept.
func (s *Store) PruneRuns(ctx context.Context, olderThan time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < ?`, olderThan.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("prune runs: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune runs: %w", err)
	}
	if n > 0 {
		s.log.Info("pruned run history", "runs", n, "finished_before", olderThan.UTC())
	}
	return n, nil
}
