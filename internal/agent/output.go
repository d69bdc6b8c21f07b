package agent

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

// outputPipe forwards what the runner (and anything it starts) writes to one
// of its standard file descriptors. Flush guarantees that every byte written
// to the pipe before Flush was called has been forwarded when it returns,
// which is how output is kept ahead of the result that follows it.
type outputPipe struct {
	f      *os.File
	stream atollv1.Stream
	send   func(*atollv1.WorkerEvent)

	mu      sync.Mutex
	pending []chan struct{}
	done    chan struct{}
}

const outputChunk = 32 << 10

func newOutputPipe(f *os.File, stream atollv1.Stream, send func(*atollv1.WorkerEvent)) *outputPipe {
	p := &outputPipe{f: f, stream: stream, send: send, done: make(chan struct{})}
	go p.loop()
	return p
}

func (p *outputPipe) forward(b []byte) {
	data := make([]byte, len(b))
	copy(data, b)
	p.send(&atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Output{Output: &atollv1.Output{Stream: p.stream, Data: data}}})
}

func (p *outputPipe) loop() {
	defer close(p.done)
	buf := make([]byte, outputChunk)
	for {
		n, err := p.f.Read(buf)
		if n > 0 {
			p.forward(buf[:n])
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			// A Flush interrupted the read: forward exactly what is in the
			// pipe now, then answer every Flush waiting.
			_ = p.f.SetReadDeadline(time.Time{})
			p.drainAvailable(buf)
			p.ackPending()
		default:
			p.ackPending()
			return
		}
	}
}

func (p *outputPipe) drainAvailable(buf []byte) {
	avail := pipeAvailable(p.f)
	for avail > 0 {
		n, err := p.f.Read(buf[:min(avail, len(buf))])
		if n > 0 {
			p.forward(buf[:n])
			avail -= n
		}
		if err != nil {
			return
		}
	}
}

func (p *outputPipe) ackPending() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.pending {
		close(c)
	}
	p.pending = nil
}

// Flush waits until everything written to the pipe so far is forwarded, or
// until timeout passes (a stuck reader must not hold back a result).
func (p *outputPipe) Flush(timeout time.Duration) {
	ack := make(chan struct{})
	p.mu.Lock()
	p.pending = append(p.pending, ack)
	p.mu.Unlock()
	if err := p.f.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return
	}
	select {
	case <-ack:
	case <-p.done:
	case <-time.After(timeout):
	}
}

// Close stops forwarding; the loop ends once the read end is closed.
func (p *outputPipe) Close() error {
	err := p.f.Close()
	<-p.done
	return err
}

var _ io.Closer = (*outputPipe)(nil)
