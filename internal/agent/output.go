package agent

import (
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

// outputPipe forwards what the runner (and anything it starts) writes to one
// of its standard file descriptors. Flush guarantees that every byte written
// to the pipe before Flush was called has been forwarded when it returns,
// which is how output is kept ahead of the result that follows it.
//
// Every read of the pipe and the forwarding of what it read happen under mu,
// so Flush needs no help from the loop: it takes mu, and whatever the loop
// read before is forwarded; what is still in the pipe, Flush reads itself. A
// call that printed nothing costs one ioctl per stream and wakes no goroutine.
type outputPipe struct {
	f      *os.File
	rc     syscall.RawConn
	stream atollv1.Stream
	send   func(*atollv1.WorkerEvent)

	mu  sync.Mutex
	buf []byte // guarded by mu
	eof bool   // guarded by mu: the write end is closed everywhere

	done chan struct{}
}

const outputChunk = 32 << 10

func newOutputPipe(f *os.File, stream atollv1.Stream, send func(*atollv1.WorkerEvent)) *outputPipe {
	p := &outputPipe{f: f, stream: stream, send: send, buf: make([]byte, outputChunk), done: make(chan struct{})}
	rc, err := f.SyscallConn()
	if err != nil {
		// Not a pollable file: nothing to forward from.
		close(p.done)
		return p
	}
	p.rc = rc
	go p.loop()
	return p
}

func (p *outputPipe) forward(b []byte) {
	data := make([]byte, len(b))
	copy(data, b)
	p.send(&atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Output{Output: &atollv1.Output{Stream: p.stream, Data: data}}})
}

// readOnce reads at most limit bytes and forwards them; it returns how
// many it read, with empty set where the pipe had nothing to read now
// (EAGAIN) and an error at its end. The caller holds mu.
func (p *outputPipe) readOnce(fd int, limit int) (n int, empty bool, err error) {
	for {
		n, err := unix.Read(fd, p.buf[:min(limit, len(p.buf))])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, true, nil
		case err != nil:
			return 0, false, err
		case n == 0:
			p.eof = true
			return 0, false, io.EOF
		}
		p.forward(p.buf[:n])
		return n, false, nil
	}
}

func (p *outputPipe) loop() {
	defer close(p.done)
	for {
		var rerr error
		err := p.rc.Read(func(fd uintptr) bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.eof {
				rerr = io.EOF
				return true
			}
			var empty bool
			_, empty, rerr = p.readOnce(int(fd), len(p.buf))
			return !empty // on false the poller waits until the pipe is readable
		})
		if err != nil || rerr != nil {
			return
		}
	}
}

// Flush forwards everything written to the pipe so far before it returns.
// It reads only what was there when it began: a process that keeps
// writing cannot hold the result back.
func (p *outputPipe) Flush() {
	if p.rc == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.rc.Control(func(fd uintptr) {
		for left := pipeAvailable(int(fd)); left > 0 && !p.eof; {
			n, empty, err := p.readOnce(int(fd), left)
			if empty || err != nil {
				return
			}
			left -= n
		}
	})
}

// Close stops forwarding; the loop ends once the read end is closed.
func (p *outputPipe) Close() error {
	err := p.f.Close()
	<-p.done
	return err
}

var _ io.Closer = (*outputPipe)(nil)
