package agent

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

type collector struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *collector) send(ev *atollv1.WorkerEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(ev.GetOutput().GetData())
}

func (c *collector) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// pipeTo returns an output pipe forwarding to send, and the write end of
// the pipe it reads.
func pipeTo(t *testing.T, stream atollv1.Stream, send func(*atollv1.WorkerEvent)) (*outputPipe, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	return newOutputPipe(r, stream, send), w
}

// Flush must return only once everything written before it was forwarded,
// however the writes and the reader's reads interleave.
func TestFlushForwardsEverythingWrittenBefore(t *testing.T) {
	for i := range 200 {
		var c collector
		p, w := pipeTo(t, atollv1.Stream_STREAM_STDOUT, c.send)
		want := strings.Repeat("x", i*97) + "end\n"
		if _, err := w.WriteString(want); err != nil {
			t.Fatal(err)
		}
		p.Flush()
		if got := c.String(); got != want {
			t.Fatalf("round %d: after Flush got %d bytes, want %d", i, len(got), len(want))
		}
		w.Close()
		p.Close()
	}
}

func TestFlushAfterWriterClosedReturns(t *testing.T) {
	var c collector
	p, w := pipeTo(t, atollv1.Stream_STREAM_STDERR, c.send)
	w.WriteString("last words")
	w.Close()
	done := make(chan struct{})
	go func() { p.Flush(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Flush hung after the writer closed")
	}
	p.Close()
	if c.String() != "last words" {
		t.Fatalf("got %q", c.String())
	}
}

// Flush must hold its guarantee while the loop is reading the same pipe:
// after each write and Flush, everything written so far has been
// forwarded, in order, whichever of the two read each piece.
func TestFlushWhileTheLoopReads(t *testing.T) {
	var c collector
	p, w := pipeTo(t, atollv1.Stream_STREAM_STDOUT, c.send)
	var want strings.Builder
	for i := range 2000 {
		piece := strings.Repeat(string(rune('a'+i%26)), 1+i%300)
		if _, err := w.WriteString(piece); err != nil {
			t.Fatal(err)
		}
		want.WriteString(piece)
		p.Flush()
		if got := c.String(); got != want.String() {
			t.Fatalf("write %d: after Flush got %d bytes, want %d", i, len(got), want.Len())
		}
	}
	w.Close()
	p.Close()
}

// A process that never stops writing must not keep Flush from returning:
// it forwards what was in the pipe when it began, not what the writer adds
// while it reads. While it runs, at most the pipe's capacity goes out, and
// the few chunks the loop forwards before Flush gets the lock (a mutex
// waited on for 1 ms is handed to its waiter); a Flush that read on while
// the writer wrote would forward a chunk every millisecond without end.
func TestFlushReadsOnlyWhatWasThere(t *testing.T) {
	// Forwarding slower than the writer writes keeps the pipe full.
	var forwarded atomic.Int64
	slow := func(ev *atollv1.WorkerEvent) {
		time.Sleep(time.Millisecond)
		forwarded.Add(int64(len(ev.GetOutput().GetData())))
	}
	p, w := pipeTo(t, atollv1.Stream_STREAM_STDOUT, slow)
	capacity, err := unix.FcntlInt(w.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	stop, wrote, started := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	go func() {
		defer close(wrote)
		line := []byte(strings.Repeat("y", 4096))
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := w.Write(line); err != nil {
				return
			}
			once.Do(func() { close(started) })
		}
	}()
	<-started
	time.Sleep(10 * time.Millisecond) // the pipe fills
	for i := range 20 {
		before := forwarded.Load()
		p.Flush()
		if limit := int64(capacity + 4*outputChunk); forwarded.Load()-before > limit {
			t.Fatalf("flush %d: %d bytes forwarded while it ran, more than the %d it may", i, forwarded.Load()-before, limit)
		}
	}
	close(stop)
	w.Close()
	<-wrote
	p.Close()
}
