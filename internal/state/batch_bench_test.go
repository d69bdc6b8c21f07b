package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"
)

// BenchmarkRunHistoryBatch is what one run costs in a batch of 32, as the
// server's history writes a busy server's runs: each run inserted once,
// finished, without output.
func BenchmarkRunHistoryBatch(b *testing.B) {
	for _, ids := range []struct {
		name string
		next func(i int) string
	}{
		{"random ids", func(int) string {
			var x [8]byte
			_, _ = rand.Read(x[:])
			return "r-" + hex.EncodeToString(x[:])
		}},
		{"ordered ids", func(i int) string { return fmt.Sprintf("r-%016x", i) }},
	} {
		b.Run(ids.name, func(b *testing.B) {
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
			batch := make([]RunRecord, 0, 32)
			i := 0
			for b.Loop() {
				now := time.Now()
				batch = append(batch, RunRecord{Run: Run{ID: ids.next(i), Account: "alice", Function: "f", MachineType: "S", EnvKey: "e",
					QueuedAt: now, StartedAt: now, FinishedAt: now, Outcome: OutcomeOK, ExitStatus: &exit, WorkerID: "w-1", Attempt: 1}})
				i++
				if len(batch) == cap(batch) {
					if err := s.SaveRuns(ctx, batch); err != nil {
						b.Fatal(err)
					}
					batch = batch[:0]
				}
			}
		})
	}
}
