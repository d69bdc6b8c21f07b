package agent

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

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

// Flush must return only once everything written before it was forwarded,
// however the writes and the reader's reads interleave.
func TestFlushForwardsEverythingWrittenBefore(t *testing.T) {
	for i := range 200 {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		var c collector
		p := newOutputPipe(r, atollv1.Stream_STREAM_STDOUT, c.send)
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
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var c collector
	p := newOutputPipe(r, atollv1.Stream_STREAM_STDERR, c.send)
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
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var c collector
	p := newOutputPipe(r, atollv1.Stream_STREAM_STDOUT, c.send)
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
