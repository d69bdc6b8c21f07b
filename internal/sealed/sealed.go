// Package sealed holds a call's large payloads (its arguments, or the value
// it returns) in sealed memfds: memory that one process fills, seals
// against every change, and hands to another as a descriptor over a unix
// socket (SCM_RIGHTS), so that the server passes 100 MB on without reading
// or copying it. A descriptor received from a peer is checked (Open) before
// anything is read from it: a peer's bytes, and its descriptors, are
// hostile input.
package sealed

import (
	"errors"
	"fmt"
	"os"
)

// ErrUnsupported says this system has no sealed memfds.
var ErrUnsupported = errors.New("sealed memfds are not supported on this system")

// ErrNotSealed says a received descriptor is not a sealed memfd.
var ErrNotSealed = errors.New("not a memfd sealed against writes, growing and shrinking")

// File is a sealed memfd of Size bytes, or (from Create, before Seal) one
// being filled.
type File struct {
	f    *os.File
	size int64
}

// Size is the file's size in bytes, known once it is sealed.
func (f *File) Size() int64 { return f.size }

// File is the descriptor, to read from (at offsets: its position is shared
// with whoever else holds it), write to before Seal, or send.
func (f *File) File() *os.File { return f.f }

// Close closes this process's descriptor; the memory lives on while
// another process (or a pipe it was spliced into) holds it.
func (f *File) Close() error { return f.f.Close() }

// TooLargeError says a received payload is larger than the receiver takes.
type TooLargeError struct{ Size, Max int64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("a payload of %d bytes; at most %d are allowed", e.Size, e.Max)
}
