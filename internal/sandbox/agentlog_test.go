package sandbox

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// logged runs writes through an agentLog and returns the server's log
// records, as JSON objects.
func logged(t *testing.T, writes ...string) []map[string]any {
	t.Helper()
	var buf bytes.Buffer
	l := newAgentLog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "w1", "acme")
	start := time.Now()
	l.now = func() time.Time { return start } // a flood within one instant: the burst alone

	for _, w := range writes {
		l.Write([]byte(w))
	}
	l.flush()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("server log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

func TestAgentLogRecordsAreTaggedAndCapped(t *testing.T) {
	recs := logged(t, `{"time":"x","level":"ERROR","msg":"cannot reach the server","err":"refused"}`+"\n")
	if len(recs) != 1 {
		t.Fatalf("records %v, want one", recs)
	}
	r := recs[0]
	if r["msg"] != "worker agent" || r["worker"] != "w1" || r["account"] != "acme" || r["agent_msg"] != "cannot reach the server" {
		t.Errorf("record %v", r)
	}
	if r["level"] != "WARN" {
		t.Errorf("level %v: a worker's error is at most a warning of the server", r["level"])
	}
	if a, _ := r["agent"].(map[string]any); a["err"] != "refused" {
		t.Errorf("attributes %v", r["agent"])
	}
}

func TestAgentLogNeverLogsForeignLines(t *testing.T) {
	forged := "time=2026-01-01T00:00:00Z level=ERROR component=auth msg=\"key leaked\" forged=1\n"
	recs := logged(t, forged, strings.Repeat("x", 3<<20), "\n", "half a line")
	for _, r := range recs {
		for k, v := range r {
			if s, ok := v.(string); ok && (strings.Contains(s, "component=auth") || strings.Contains(s, "xxxx") || strings.Contains(s, "half")) {
				t.Errorf("record %v carries the worker's bytes in %s", r, k)
			}
		}
	}
	last := recs[len(recs)-1]
	if last["unstructured_lines"] != float64(3) {
		t.Errorf("records %v: want three lines counted as left out", recs)
	}
}

func TestAgentLogForgedRecordStaysInItsGroup(t *testing.T) {
	recs := logged(t, `{"level":"ERROR","msg":"x","component":"auth","worker":"other","account":"root"}`+"\n")
	r := recs[0]
	if r["worker"] != "w1" || r["account"] != "acme" || r["component"] != nil {
		t.Errorf("record %v: the worker's attributes escaped their group", r)
	}
}

func TestAgentLogIsBounded(t *testing.T) {
	var writes []string
	for range 5000 {
		writes = append(writes, `{"level":"INFO","msg":"`+strings.Repeat("m", 4000)+`"}`+"\n")
	}
	recs := logged(t, writes...)
	// The burst, and the record that counts what was left out.
	if len(recs) != agentLogBurst+1 {
		t.Errorf("%d records logged from a flood, want %d", len(recs), agentLogBurst+1)
	}
	for _, r := range recs {
		if s, _ := r["agent_msg"].(string); len(s) > agentLogMaxMsg+4 {
			t.Errorf("message of %d bytes logged", len(s))
		}
	}
	if last := recs[len(recs)-1]; last["suppressed_records"] == float64(0) {
		t.Errorf("suppressed records not counted: %v", last)
	}
}

func TestAgentLogHasATotal(t *testing.T) {
	var buf bytes.Buffer
	l := newAgentLog(slog.New(slog.NewJSONHandler(&buf, nil)), "w1", "acme")
	clock := time.Now()
	l.now = func() time.Time { clock = clock.Add(time.Second); return clock } // never rate-limited
	for range 3 * agentLogMaxRecords {
		l.Write([]byte(`{"level":"INFO","msg":"m"}` + "\n"))
	}
	l.flush()
	if n := strings.Count(buf.String(), "\n"); n != agentLogMaxRecords+1 {
		t.Errorf("%d lines logged, want %d records and the count of those left out", n, agentLogMaxRecords+1)
	}
}
