package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// clock is a settable time source for the store.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)}
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func openTest(t *testing.T, path string, c *clock) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, WithClock(c.now))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t *testing.T) (*Store, *clock) {
	t.Helper()
	c := newClock()
	return openTest(t, filepath.Join(t.TempDir(), "state.db"), c), c
}

func mustAccount(t *testing.T, s *Store, name string) {
	t.Helper()
	if _, err := s.EnsureAccount(context.Background(), name); err != nil {
		t.Fatalf("EnsureAccount(%q): %v", name, err)
	}
}

func intp(v int) *int { return &v }

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	path := filepath.Join(t.TempDir(), "sub", "state.db")
	s, err := Open(ctx, path, WithClock(c.now))
	if err != nil {
		t.Fatal(err)
	}
	mustAccount(t, s, "alice")
	key := Key{ID: "ak_1", Account: "alice", SecretHash: []byte{1, 2, 3}, Label: "laptop"}
	if err := s.InsertKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	run := Run{ID: "r1", Account: "alice", Function: "main.f", MachineType: "S", EnvKey: "e1"}
	if err := s.CreateRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendLogs(ctx, "r1", []LogLine{{Stream: StreamStdout, Data: "hello\n"}}); err != nil {
		t.Fatal(err)
	}
	run.FinishedAt, run.Outcome, run.ExitStatus = c.now(), OutcomeOK, intp(0)
	save(t, s, run)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, path, c)
	gotKey, err := s.KeyByID(ctx, "ak_1")
	if err != nil {
		t.Fatal(err)
	}
	wantKey := key
	wantKey.Created = c.now()
	if diff := cmp.Diff(wantKey, gotKey); diff != "" {
		t.Errorf("key after reopen (-want +got):\n%s", diff)
	}
	gotRun, err := s.GetRun(ctx, "alice", "r1")
	if err != nil {
		t.Fatal(err)
	}
	wantRun := run
	wantRun.QueuedAt, wantRun.FinishedAt, wantRun.Outcome, wantRun.ExitStatus = c.now(), c.now(), OutcomeOK, intp(0)
	if diff := cmp.Diff(wantRun, gotRun); diff != "" {
		t.Errorf("run after reopen (-want +got):\n%s", diff)
	}
	logs, err := s.Logs(ctx, "alice", "r1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]LogLine{{Seq: 1, Stream: StreamStdout, At: c.now(), Data: "hello\n"}}, logs); diff != "" {
		t.Errorf("logs after reopen (-want +got):\n%s", diff)
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	for i := range 3 {
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		var v, rows int
		if err := s.db.QueryRowContext(ctx, `SELECT MAX(version), COUNT(*) FROM schema_version`).Scan(&v, &rows); err != nil {
			t.Fatal(err)
		}
		if v != len(migrations) || rows != 1 {
			t.Errorf("open %d: schema_version = %d in %d rows, want %d in 1", i, v, rows, len(migrations))
		}
		s.Close()
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(ctx, path); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open = %v, want ErrSchemaTooNew", err)
	}
}

func TestOpenSettings(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s := openTest(t, path, newClock())
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("file mode = %o, want 600", mode)
	}
	for _, tc := range []struct{ pragma, want string }{
		{"journal_mode", "wal"},
		{"foreign_keys", "1"},
		{"busy_timeout", "5000"},
	} {
		var got string
		if err := s.db.QueryRowContext(ctx, "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("PRAGMA %s = %q, want %q", tc.pragma, got, tc.want)
		}
	}
}

func TestAccounts(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t)
	a, err := s.CreateAccount(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateAccount(ctx, "alice"); !errors.Is(err, ErrExists) {
		t.Errorf("second CreateAccount = %v, want ErrExists", err)
	}
	c.advance(time.Hour)
	got, err := s.EnsureAccount(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("EnsureAccount of existing account (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		name    string
		account string
		valid   bool
	}{
		{"simple", "bob", true},
		{"punctuation", "team-a_1.prod", true},
		{"empty", "", false},
		{"leading dot", ".hidden", false},
		{"leading dash", "-rf", false},
		{"slash", "a/b", false},
		{"space", "a b", false},
		{"too long", strings.Repeat("a", 65), false},
		{"longest", strings.Repeat("a", 64), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.EnsureAccount(ctx, tc.account)
			if tc.valid && err != nil {
				t.Errorf("EnsureAccount(%q) = %v, want success", tc.account, err)
			}
			if !tc.valid && !errors.Is(err, ErrInvalidName) {
				t.Errorf("EnsureAccount(%q) = %v, want ErrInvalidName", tc.account, err)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t)
	mustAccount(t, s, "alice")
	mustAccount(t, s, "bob")

	k1 := Key{ID: "ak_1", Account: "alice", SecretHash: []byte("h1"), Label: "one"}
	k2 := Key{ID: "ak_2", Account: "bob", SecretHash: []byte("h2")}
	for _, k := range []Key{k1, k2} {
		if err := s.InsertKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		c.advance(time.Second)
	}
	if err := s.InsertKey(ctx, k1); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate InsertKey = %v, want ErrExists", err)
	}
	if err := s.InsertKey(ctx, Key{ID: "ak_3", Account: "nobody", SecretHash: []byte("h")}); !errors.Is(err, ErrNotFound) {
		t.Errorf("InsertKey for unknown account = %v, want ErrNotFound", err)
	}
	if _, err := s.KeyByID(ctx, "ak_none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("KeyByID(unknown) = %v, want ErrNotFound", err)
	}

	ids := func(keys []Key) []string {
		var out []string
		for _, k := range keys {
			out = append(out, k.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name, account string
		want          []string
	}{
		{"all", "", []string{"ak_1", "ak_2"}},
		{"alice", "alice", []string{"ak_1"}},
		{"bob", "bob", []string{"ak_2"}},
		{"unknown", "carol", nil},
	} {
		t.Run("list "+tc.name, func(t *testing.T) {
			got, err := s.ListKeys(ctx, tc.account)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, ids(got)); diff != "" {
				t.Errorf("ListKeys(%q) (-want +got):\n%s", tc.account, diff)
			}
		})
	}

	touchedAt := c.now()
	if err := s.TouchKey(ctx, "ak_1"); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchKey(ctx, "ak_none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("TouchKey(unknown) = %v, want ErrNotFound", err)
	}

	c.advance(time.Minute)
	revokedAt := c.now()
	if err := s.RevokeKey(ctx, "ak_1"); err != nil {
		t.Fatal(err)
	}
	c.advance(time.Minute)
	if err := s.RevokeKey(ctx, "ak_1"); err != nil {
		t.Errorf("second RevokeKey = %v, want success", err)
	}
	if err := s.RevokeKey(ctx, "ak_none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RevokeKey(unknown) = %v, want ErrNotFound", err)
	}
	got, err := s.KeyByID(ctx, "ak_1")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Revoked() || !got.RevokedAt.Equal(revokedAt) || !got.LastUsed.Equal(touchedAt) {
		t.Errorf("after touch and revoke: LastUsed=%v RevokedAt=%v, want %v and %v", got.LastUsed, got.RevokedAt, touchedAt, revokedAt)
	}
	if other, _ := s.KeyByID(ctx, "ak_2"); other.Revoked() {
		t.Error("revoking ak_1 revoked ak_2")
	}
}

func TestRunLifecycle(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t)
	mustAccount(t, s, "alice")

	queued := c.now()
	run := Run{ID: "r1", Account: "alice", Function: "pkg.train", MachineType: "M"}
	if err := s.CreateRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRun(ctx, run); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate CreateRun = %v, want ErrExists", err)
	}
	if err := s.CreateRun(ctx, Run{ID: "r2", Account: "nobody", Function: "f"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("CreateRun for unknown account = %v, want ErrNotFound", err)
	}

	want := run
	want.QueuedAt = queued
	check := func(stage string) {
		t.Helper()
		got, err := s.GetRun(ctx, "alice", "r1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", stage, diff)
		}
		if got.Finished() != !want.FinishedAt.IsZero() {
			t.Errorf("%s: Finished() = %v", stage, got.Finished())
		}
	}
	check("queued")

	c.advance(2 * time.Second)
	want.StartedAt, want.WorkerID, want.EnvKey = c.now(), "w-7", "env123"
	save(t, s, want)
	check("started")

	c.advance(3 * time.Second)
	want.FinishedAt, want.Outcome, want.ExitStatus = c.now(), OutcomeOOM, intp(137)
	save(t, s, want)
	check("finished")
}

// save records r's latest state, as the server's run history does.
func save(t *testing.T, s *Store, r Run) {
	t.Helper()
	if err := s.SaveRuns(context.Background(), []RunRecord{{Run: r}}); err != nil {
		t.Fatal(err)
	}
}

func TestInterruptUnfinishedRuns(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t)
	mustAccount(t, s, "alice")
	for _, id := range []string{"done", "running"} {
		if err := s.CreateRun(ctx, Run{ID: id, Account: "alice", Function: "f"}); err != nil {
			t.Fatal(err)
		}
	}
	save(t, s, Run{ID: "done", Account: "alice", Function: "f", FinishedAt: c.now(), Outcome: OutcomeOK, ExitStatus: intp(0)})
	c.advance(time.Minute)
	n, err := s.InterruptUnfinishedRuns(ctx)
	if err != nil || n != 1 {
		t.Fatalf("InterruptUnfinishedRuns = %d, %v; want 1, nil", n, err)
	}
	r, _ := s.GetRun(ctx, "alice", "running")
	if r.Outcome != OutcomeInterrupted || !r.FinishedAt.Equal(c.now()) || r.ExitStatus != nil {
		t.Errorf("interrupted run = %+v", r)
	}
	r, _ = s.GetRun(ctx, "alice", "done")
	if r.Outcome != OutcomeOK {
		t.Errorf("finished run changed to %q", r.Outcome)
	}
}

func TestListRunsNewestFirst(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t)
	mustAccount(t, s, "alice")
	mustAccount(t, s, "bob")
	for i := range 5 {
		if err := s.CreateRun(ctx, Run{ID: fmt.Sprintf("a%d", i), Account: "alice", Function: "f"}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRun(ctx, Run{ID: fmt.Sprintf("b%d", i), Account: "bob", Function: "f"}); err != nil {
			t.Fatal(err)
		}
		if i != 2 { // a2 and a3 share a timestamp: insertion order breaks the tie
			c.advance(time.Millisecond)
		}
	}
	for _, tc := range []struct {
		name  string
		limit int
		want  []string
	}{
		{"all", 0, []string{"a4", "a3", "a2", "a1", "a0"}},
		{"limit", 2, []string{"a4", "a3"}},
		{"limit above count", 10, []string{"a4", "a3", "a2", "a1", "a0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runs, err := s.ListRuns(ctx, "alice", tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range runs {
				got = append(got, r.ID)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ListRuns (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLogsOrdering(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t)
	mustAccount(t, s, "alice")
	if err := s.CreateRun(ctx, Run{ID: "r1", Account: "alice", Function: "f"}); err != nil {
		t.Fatal(err)
	}
	t0 := c.now()
	first := []LogLine{
		{Seq: 99, Stream: StreamSystem, At: t0, Data: "building env\n"},
		{Stream: StreamStdout, At: t0.Add(time.Millisecond), Data: "out 1\n"},
	}
	second := []LogLine{
		{Stream: StreamStderr, At: t0.Add(2 * time.Millisecond), Data: "err \xff binary\n"},
		{Stream: StreamStdout, Data: "no time\n"},
	}
	if err := s.AppendLogs(ctx, "r1", first); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendLogs(ctx, "r1", nil); err != nil {
		t.Errorf("AppendLogs(nil) = %v", err)
	}
	c.advance(time.Second)
	if err := s.AppendLogs(ctx, "r1", second); err != nil {
		t.Fatal(err)
	}
	got, err := s.Logs(ctx, "alice", "r1")
	if err != nil {
		t.Fatal(err)
	}
	want := []LogLine{
		{Seq: 1, Stream: StreamSystem, At: t0, Data: "building env\n"},
		{Seq: 2, Stream: StreamStdout, At: t0.Add(time.Millisecond), Data: "out 1\n"},
		{Seq: 3, Stream: StreamStderr, At: t0.Add(2 * time.Millisecond), Data: "err \xff binary\n"},
		{Seq: 4, Stream: StreamStdout, At: c.now(), Data: "no time\n"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Logs (-want +got):\n%s", diff)
	}
	if err := s.AppendLogs(ctx, "nope", first); !errors.Is(err, ErrNotFound) {
		t.Errorf("AppendLogs to unknown run = %v, want ErrNotFound", err)
	}
}

func TestAppendLogsConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	mustAccount(t, s, "alice")
	if err := s.CreateRun(ctx, Run{ID: "r1", Account: "alice", Function: "f"}); err != nil {
		t.Fatal(err)
	}
	const writers, batches, perBatch = 4, 10, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers*batches)
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				lines := make([]LogLine, perBatch)
				for i := range lines {
					lines[i] = LogLine{Stream: StreamStdout, Data: fmt.Sprintf("w%d b%d l%d", w, b, i)}
				}
				errs <- s.AppendLogs(ctx, "r1", lines)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("AppendLogs: %v", err)
		}
	}
	got, err := s.Logs(ctx, "alice", "r1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != writers*batches*perBatch {
		t.Fatalf("got %d lines, want %d", len(got), writers*batches*perBatch)
	}
	for i, l := range got {
		if l.Seq != int64(i+1) {
			t.Fatalf("line %d has seq %d", i, l.Seq)
		}
		// A batch is one transaction: its lines stay together and in order.
		if i%perBatch != 0 && l.Data[:len(l.Data)-1] != got[i-1].Data[:len(l.Data)-1] {
			t.Fatalf("batch split: %q after %q", l.Data, got[i-1].Data)
		}
	}
}

func TestAccountIsolation(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	mustAccount(t, s, "alice")
	mustAccount(t, s, "bob")
	if err := s.CreateRun(ctx, Run{ID: "r-alice", Account: "alice", Function: "f"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendLogs(ctx, "r-alice", []LogLine{{Stream: StreamStdout, Data: "secret output"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRun(ctx, "bob", "r-alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("bob GetRun(alice's run) = %v, want ErrNotFound", err)
	}
	if lines, err := s.Logs(ctx, "bob", "r-alice"); !errors.Is(err, ErrNotFound) || lines != nil {
		t.Errorf("bob Logs(alice's run) = %v, %v, want nil, ErrNotFound", lines, err)
	}
	if runs, err := s.ListRuns(ctx, "bob", 0); err != nil || len(runs) != 0 {
		t.Errorf("bob ListRuns = %v, %v, want none", runs, err)
	}
	if _, err := s.GetRun(ctx, "alice", "r-alice"); err != nil {
		t.Errorf("alice GetRun(own run) = %v", err)
	}
}

func TestPruneRuns(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t)
	mustAccount(t, s, "alice")
	create := func(id string, finish bool) {
		t.Helper()
		if err := s.CreateRun(ctx, Run{ID: id, Account: "alice", Function: "f"}); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendLogs(ctx, id, []LogLine{{Stream: StreamStdout, Data: id}}); err != nil {
			t.Fatal(err)
		}
		if finish {
			save(t, s, Run{ID: id, Account: "alice", Function: "f", FinishedAt: c.now(), Outcome: OutcomeOK, ExitStatus: intp(0)})
		}
	}
	create("old", true)
	create("old-unfinished", false)
	c.advance(48 * time.Hour)
	cutoff := c.now()
	create("at-cutoff", true)
	c.advance(time.Hour)
	create("new", true)

	n, err := s.PruneRuns(ctx, cutoff)
	if err != nil || n != 1 {
		t.Fatalf("PruneRuns = %d, %v; want 1, nil", n, err)
	}
	runs, err := s.ListRuns(ctx, "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range runs {
		got = append(got, r.ID)
	}
	if diff := cmp.Diff([]string{"new", "at-cutoff", "old-unfinished"}, got); diff != "" {
		t.Errorf("runs after prune (-want +got):\n%s", diff)
	}
	var orphans int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM run_logs WHERE run_id = 'old'`).Scan(&orphans); err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Errorf("%d log lines of the pruned run remain", orphans)
	}
	if _, err := s.Logs(ctx, "alice", "old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Logs(pruned run) = %v, want ErrNotFound", err)
	}
}

func TestSaveRunsUpsertsAndAppends(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.EnsureAccount(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	queued := time.Unix(1000, 0).UTC()
	run := Run{ID: "r1", Account: "a", Function: "f", MachineType: "XS", QueuedAt: queued}
	if err := s.SaveRuns(ctx, []RunRecord{{Run: run}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetRun(ctx, "a", "r1"); got.Finished() {
		t.Fatalf("run finished before its end was saved: %+v", got)
	}
	code := 3
	run.StartedAt, run.FinishedAt, run.Outcome, run.ExitStatus, run.WorkerID, run.EnvKey =
		queued.Add(time.Second), queued.Add(2*time.Second), OutcomeCrashed, &code, "w1", "e1"
	other := Run{ID: "r2", Account: "a", Function: "g", QueuedAt: queued, FinishedAt: queued, Outcome: OutcomeOK}
	err = s.SaveRuns(ctx, []RunRecord{
		{Run: run, Logs: []LogLine{{Stream: StreamStdout, Data: "one\n"}, {Stream: StreamStderr, Data: "two\n"}}},
		{Run: other},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRun(ctx, "a", "r1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Outcome != OutcomeCrashed || *got.ExitStatus != 3 || got.WorkerID != "w1" || got.EnvKey != "e1" ||
		!got.StartedAt.Equal(run.StartedAt) || !got.FinishedAt.Equal(run.FinishedAt) || !got.QueuedAt.Equal(queued) {
		t.Errorf("run = %+v", got)
	}
	if err := s.SaveRuns(ctx, []RunRecord{{Run: run, Logs: []LogLine{{Stream: StreamStdout, Data: "three\n"}}}}); err != nil {
		t.Fatal(err)
	}
	lines, err := s.Logs(ctx, "a", "r1")
	if err != nil {
		t.Fatal(err)
	}
	var data []string
	for _, l := range lines {
		data = append(data, fmt.Sprintf("%d:%s", l.Seq, l.Data))
	}
	if diff := cmp.Diff([]string{"1:one\n", "2:two\n", "3:three\n"}, data); diff != "" {
		t.Errorf("logs (-want +got):\n%s", diff)
	}
	if runs, _ := s.ListRuns(ctx, "a", 10); len(runs) != 2 {
		t.Errorf("%d runs, want 2", len(runs))
	}
	if err := s.SaveRuns(ctx, []RunRecord{{Run: Run{ID: "r3", Account: "nobody", Function: "f"}}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown account: err = %v, want ErrNotFound", err)
	}
}
