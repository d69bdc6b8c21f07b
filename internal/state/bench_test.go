package state

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkRunHistory is what recording one call costs: the writes the
// server makes for a run from queueing to its end, with one output line.
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
		if err := s.CreateRun(ctx, Run{ID: id, Account: "alice", Function: "f", MachineType: "S", EnvKey: "e"}); err != nil {
			b.Fatal(err)
		}
		if err := s.StartRun(ctx, id, "w-1", ""); err != nil {
			b.Fatal(err)
		}
		if err := s.AppendLogs(ctx, id, []LogLine{{Stream: StreamStdout, Data: "hello\n"}}); err != nil {
			b.Fatal(err)
		}
		if err := s.FinishRun(ctx, id, OutcomeOK, &exit); err != nil {
			b.Fatal(err)
		}
	}
}
