package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"golang.org/x/time/rate"
)

// Bounds on what one worker's agent may put in the server's log. The
// agent logs a few records per worker life; the bounds only stop a flood.
const (
	agentLogMaxLine    = 8 << 10 // longer lines are dropped whole
	agentLogMaxMsg     = 512     // bytes of a record's message kept
	agentLogMaxValue   = 256     // bytes of each attribute's value kept
	agentLogMaxAttrs   = 16      // attributes kept per record
	agentLogMaxRecords = 1000    // records logged per worker, ever
	agentLogRate       = 10      // records per second, sustained...
	agentLogBurst      = 100     // ...after a burst of this many
)

// agentLog turns what a worker's agent writes to its standard error into
// records of the server's own log. The agent writes one JSON object per
// line (slog's JSON handler, see cmd/atoll/worker.go); each becomes one
// record tagged with the worker and its account, its message and
// attributes cut to size and its level at most WARN, so the
// server's log never carries a worker's bytes as they came: a line that
// is not such an object (a forged "level=ERROR component=auth" line, a
// flood) is counted, never logged. The number of records is bounded in
// rate and in total. The stderr pump's tail still keeps the last bytes
// for the error of a worker that failed to start (the runtime's own
// message).
type agentLog struct {
	logger  *slog.Logger
	worker  string
	account string
	limit   *rate.Limiter
	now     func() time.Time // the limiter's clock

	partial  []byte
	skipping bool // inside a line longer than agentLogMaxLine

	logged, suppressed  int
	dropped, droppedLen int // lines not logged: not records, or too long
	warned              bool
}

func newAgentLog(logger *slog.Logger, worker, account string) *agentLog {
	return &agentLog{
		logger: logger, worker: worker, account: account,
		limit: rate.NewLimiter(agentLogRate, agentLogBurst),
		now:   time.Now,
	}
}

// Write takes any bytes; lines are handled as they complete.
func (l *agentLog) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i]
		}
		if !l.skipping {
			if len(l.partial)+len(chunk) > agentLogMaxLine {
				l.skipping = true
				l.droppedLen += len(l.partial)
				l.partial = l.partial[:0]
			} else {
				l.partial = append(l.partial, chunk...)
			}
		}
		if l.skipping {
			l.droppedLen += len(chunk)
		}
		if i < 0 {
			break
		}
		if l.skipping {
			l.skipping = false
			l.drop(0)
		} else {
			l.line(l.partial)
			l.partial = l.partial[:0]
		}
		b = b[i+1:]
	}
	return n, nil
}

// flush handles a last line without its newline and reports what was
// left out.
func (l *agentLog) flush() {
	if l.skipping {
		l.drop(0)
	} else if len(l.partial) > 0 {
		l.line(l.partial)
	}
	l.partial = nil
	if l.dropped > 0 || l.suppressed > 0 {
		l.logger.LogAttrs(context.Background(), slog.LevelInfo, "worker agent output left out of the log",
			slog.String("worker", l.worker), slog.String("account", l.account),
			slog.Int("unstructured_lines", l.dropped), slog.Int("unstructured_bytes", l.droppedLen),
			slog.Int("suppressed_records", l.suppressed))
	}
}

func (l *agentLog) drop(size int) {
	l.dropped++
	l.droppedLen += size
	if !l.warned {
		l.warned = true
		l.logger.LogAttrs(context.Background(), slog.LevelWarn,
			"worker wrote to its agent's standard error what is not an agent record; it is not logged",
			slog.String("worker", l.worker), slog.String("account", l.account))
	}
}

func (l *agentLog) line(b []byte) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return
	}
	var rec map[string]any
	if err := json.Unmarshal(b, &rec); err != nil {
		l.drop(len(b))
		return
	}
	msg, ok := rec["msg"].(string)
	if !ok {
		l.drop(len(b))
		return
	}
	if l.logged >= agentLogMaxRecords || !l.limit.AllowN(l.now(), 1) {
		l.suppressed++
		return
	}
	l.logged++
	level := slog.LevelInfo
	if s, ok := rec["level"].(string); ok {
		if err := level.UnmarshalText([]byte(s)); err != nil {
			level = slog.LevelInfo
		}
	}
	// The agent's own errors are a worker's trouble, not the server's.
	level = min(level, slog.LevelWarn)
	keys := make([]string, 0, len(rec))
	for k := range rec {
		if k != "msg" && k != "level" && k != "time" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	attrs := make([]any, 0, min(len(keys), agentLogMaxAttrs))
	for _, k := range keys[:min(len(keys), agentLogMaxAttrs)] {
		attrs = append(attrs, slog.String(cut(k, agentLogMaxValue), cut(fmt.Sprint(rec[k]), agentLogMaxValue)))
	}
	l.logger.LogAttrs(context.Background(), level, "worker agent",
		slog.String("worker", l.worker), slog.String("account", l.account),
		slog.String("agent_msg", cut(msg, agentLogMaxMsg)), slog.Group("agent", attrs...))
}

// cut shortens s to at most n bytes.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
