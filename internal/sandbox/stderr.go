package sandbox

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// stderrPump copies a worker's stderr (the agent's logs and the runtime's
// own errors) to the configured writer, or line by line to the logger, and
// keeps the last few KiB for error messages. It uses its own pipe so that
// waiting for the process never waits for a stray holder of its stderr.
type stderrPump struct {
	w    *os.File // child end
	r    *os.File
	done chan struct{}

	mu   sync.Mutex
	tail []byte
}

const stderrTailSize = 4 << 10

func startStderrPump(dst io.Writer, logger *slog.Logger, worker string) (*stderrPump, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p := &stderrPump{w: w, r: r, done: make(chan struct{})}
	if dst == nil {
		dst = &lineLogger{logger: logger, worker: worker}
	}
	go func() {
		defer close(p.done)
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				p.keep(buf[:n])
				dst.Write(buf[:n])
			}
			if err != nil {
				if ll, ok := dst.(*lineLogger); ok {
					ll.flush()
				}
				return
			}
		}
	}()
	return p, nil
}

func (p *stderrPump) keep(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tail = append(p.tail, b...)
	if len(p.tail) > stderrTailSize {
		p.tail = append([]byte(nil), p.tail[len(p.tail)-stderrTailSize:]...)
	}
}

// Tail returns the last output, trimmed.
func (p *stderrPump) Tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(bytes.TrimSpace(p.tail))
}

// finish waits for the pump to drain, up to grace, then stops it.
func (p *stderrPump) finish(grace time.Duration) {
	select {
	case <-p.done:
	case <-time.After(grace):
		p.r.Close()
		<-p.done
	}
	p.r.Close()
}

// lineLogger logs each line written to it.
type lineLogger struct {
	logger  *slog.Logger
	worker  string
	partial []byte
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.log(l.partial[:i])
		l.partial = l.partial[i+1:]
	}
	return len(b), nil
}

func (l *lineLogger) flush() {
	if len(l.partial) > 0 {
		l.log(l.partial)
		l.partial = nil
	}
}

func (l *lineLogger) log(line []byte) {
	l.logger.LogAttrs(context.Background(), slog.LevelInfo, "worker stderr",
		slog.String("worker", l.worker), slog.String("line", string(line)))
}
