package workerproto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
)

// frameWriter writes frames; it is safe for concurrent use, and a frame
// with raw bytes is never interleaved with another.
type frameWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
	// raw is what raw bytes are written through: w, or the stream itself
	// for a reader they are spliced from.
	raw rawWriter
}

func newFrameWriter(w io.Writer) *frameWriter {
	bw := bufio.NewWriterSize(w, bufferBytes)
	return &frameWriter{w: bw, raw: rawWriter{bw: bw, dst: w}}
}

// write frames m, lets raw (if not nil) write the bytes that follow it, and
// flushes.
func (w *frameWriter) write(m proto.Message, raw func(io.Writer) error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := protodelim.MarshalTo(w.w, m); err != nil {
		return err
	}
	if raw != nil {
		if err := raw(&w.raw); err != nil {
			return err
		}
	}
	return w.w.Flush()
}

// rawWriter writes a frame's raw bytes. Copied from an io.LimitedReader
// (io.CopyN), they are spliced from its reader into the stream where both
// are pipes or sockets, so a value passed on from the runner's pipe is
// never copied through the agent.
type rawWriter struct {
	bw  *bufio.Writer
	dst io.Writer
}

func (w *rawWriter) Write(p []byte) (int, error) { return w.bw.Write(p) }

func (w *rawWriter) ReadFrom(r io.Reader) (int64, error) {
	lr, ok := r.(*io.LimitedReader)
	if !ok {
		return w.bw.ReadFrom(r)
	}
	if err := w.bw.Flush(); err != nil {
		return 0, err
	}
	moved, handled, err := splice(w.dst, lr.R, lr.N)
	lr.N -= moved
	if handled {
		return moved, err
	}
	n, err := w.bw.ReadFrom(lr)
	return moved + n, err
}

// file writes the n bytes of the file f from its start: spliced into the
// stream where it is a pipe (a memfd's pages are then referenced, not
// copied), else copied through the buffer.
func (w *rawWriter) file(f *os.File, n int64) error {
	if err := w.bw.Flush(); err != nil {
		return err
	}
	moved, handled, err := spliceFile(w.dst, f, n)
	if handled {
		if err == nil && moved < n {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	_, err = w.bw.ReadFrom(io.NewSectionReader(f, 0, n))
	return err
}

// frameReader reads frames; it is not safe for concurrent use.
type frameReader struct {
	r *bufio.Reader
	// src is what r reads from, for raw bytes spliced past it.
	src io.Reader
	// buf is reused for messages up to bufferBytes, the common case, so
	// reading an event allocates nothing of its own.
	buf []byte
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, bufferBytes), src: r, buf: make([]byte, bufferBytes)}
}

// read reads the next message, of at most limit bytes, into m. It returns
// io.EOF at a clean end between frames and an ErrProtocol error for a
// frame over the limit, cut short or malformed.
func (r *frameReader) read(m proto.Message, limit uint64) error {
	n, err := binary.ReadUvarint(r.r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
		return fmt.Errorf("%w: frame length: %w", ErrProtocol, err)
	}
	if n > limit {
		return fmt.Errorf("%w: a %d byte message exceeds the %d byte limit", ErrProtocol, n, limit)
	}
	var b []byte
	if n <= uint64(len(r.buf)) {
		b = r.buf[:n]
		if _, err := io.ReadFull(r.r, b); err != nil {
			return fmt.Errorf("%w: message cut short: %w", ErrProtocol, err)
		}
	} else if b, err = readBounded(r.r, n); err != nil {
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return nil
}

// raw returns a reader of exactly n raw bytes that follow the last message;
// they must be read in full before the next read.
func (r *frameReader) raw(n int64) io.Reader {
	return io.LimitReader(r.r, n)
}

// copyRaw passes the n raw bytes that follow the last message on to dst:
// those already buffered, then the rest spliced from the stream where dst
// and the stream allow it (pipes, sockets), else copied.
func (r *frameReader) copyRaw(dst io.Writer, n int64) (int64, error) {
	var done int64
	if b := min(int64(r.r.Buffered()), n); b > 0 {
		head, _ := r.r.Peek(int(b))
		m, err := dst.Write(head)
		_, _ = r.r.Discard(m)
		done += int64(m)
		if err != nil {
			return done, err
		}
	}
	if done == n {
		return done, nil
	}
	moved, handled, err := splice(dst, r.src, n-done)
	done += moved
	if handled {
		return done, err
	}
	m, err := io.CopyN(dst, r.r, n-done)
	return done + m, err
}

// payload reads n raw bytes that follow the last message (n already
// checked against its bound).
func (r *frameReader) payload(n uint64) ([]byte, error) {
	return readBounded(r.r, n)
}

// readBounded reads exactly n bytes. Up to eagerBytes are allocated at
// once; past that, a peer stating a length it never sends holds memory in
// proportion to what it did send: the bytes are read into chunks (each as
// large as all before it) until a quarter of n has arrived, and only then
// is the whole buffer allocated, the chunks copied into its front and the
// rest read in place. A large value is so copied a quarter, not whole.
func readBounded(r io.Reader, n uint64) ([]byte, error) {
	if n <= eagerBytes {
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("%w: %d raw bytes cut short: %w", ErrProtocol, n, err)
		}
		return b, nil
	}
	var chunks [][]byte
	var got uint64
	for quarter := n / 4; got < quarter; {
		chunk := make([]byte, min(max(got, eagerBytes), quarter-got))
		m, err := io.ReadFull(r, chunk)
		got += uint64(m)
		if err != nil {
			return nil, fmt.Errorf("%w: %d raw bytes cut short after %d: %w", ErrProtocol, n, got, err)
		}
		chunks = append(chunks, chunk)
	}
	b := make([]byte, n)
	at := 0
	for _, chunk := range chunks {
		at += copy(b[at:], chunk)
	}
	if m, err := io.ReadFull(r, b[got:]); err != nil {
		return nil, fmt.Errorf("%w: %d raw bytes cut short after %d: %w", ErrProtocol, n, got+uint64(m), err)
	}
	return b, nil
}
