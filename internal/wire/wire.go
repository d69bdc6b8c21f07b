// Package wire frames the worker protocol: length-delimited protobuf
// messages (WorkerCall, WorkerEvent) on a byte stream such as the worker
// agent's stdin and stdout, each optionally followed by raw bytes whose size
// the message states. It owns only the framing, not the meaning.
package wire

import (
	"bufio"
	"io"
	"math"
	"sync"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
)

// Writer writes framed messages; it is safe for concurrent use.
type Writer struct {
	mu sync.Mutex
	w  *bufio.Writer
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 64<<10)}
}

// Write frames m and flushes it.
func (w *Writer) Write(m proto.Message) error {
	return w.WriteWith(m, nil)
}

// WriteWith frames m, then lets raw write the bytes that follow it (the
// size m states) before anything else is written, and flushes.
func (w *Writer) WriteWith(m proto.Message, raw func(io.Writer) error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := protodelim.MarshalTo(w.w, m); err != nil {
		return err
	}
	if raw != nil {
		if err := raw(w.w); err != nil {
			return err
		}
	}
	return w.w.Flush()
}

// Reader reads framed messages; it is not safe for concurrent use.
type Reader struct {
	r *bufio.Reader
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10)}
}

var unmarshal = protodelim.UnmarshalOptions{MaxSize: math.MaxInt32}

// Read reads the next message into m; it returns io.EOF at a clean end.
func (r *Reader) Read(m proto.Message) error {
	return unmarshal.UnmarshalFrom(r.r, m)
}

// Raw returns a reader of exactly n raw bytes that follow the last message;
// they must be read in full before the next Read.
func (r *Reader) Raw(n int64) io.Reader {
	return io.LimitReader(r.r, n)
}
