package state

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkRunHistory is what recording one finished run with one output
// line costs in a transaction of its own; the server batches many runs into one.
func BenchmarkRunHistory(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, b.TempDir()+"/state.db")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if _, err := s.EnsureAccount(ctx, "alice"); err != nil {
		b.Fatal(err)
	}
	exit := 0
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("r%d", i)
		i++
		// As the server's history records a run: its end, with its output.
		now := time.Now()
		run := Run{ID: id, Account: "alice", Function: "f", MachineType: "S", EnvKey: "e",
			QueuedAt: now, StartedAt: now, FinishedAt: now, Outcome: OutcomeOK, ExitStatus: &exit, WorkerID: "w-1"}
		if err := s.SaveRuns(ctx, []RunRecord{{Run: run, Logs: []LogLine{{Stream: StreamStdout, Data: "hello\n"}}}}); err != nil {
			b.Fatal(err)
		}
	}
}
