package sandbox

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// stderrPump copies a worker's stderr (the agent's logs and the runtime's
// own errors) to the configured writer, or, by default, as the agent's
// records to the logger (see agentLog), and keeps the last few KiB for
// error messages. It uses its own pipe so that
// waiting for the process never waits for a stray holder of its stderr.
type stderrPump struct {
	w    *os.File // child end
	r    *os.File
	done chan struct{}

	mu   sync.Mutex
	tail []byte
}

const stderrTailSize = 4 << 10

func startStderrPump(dst io.Writer, logger *slog.Logger, worker, account string) (*stderrPump, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p := &stderrPump{w: w, r: r, done: make(chan struct{})}
	if dst == nil {
		dst = newAgentLog(logger, worker, account)
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
				if al, ok := dst.(*agentLog); ok {
					al.flush()
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
