package fastcall

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/atoll-dev/atoll/internal/sealed"
)

// Large payloads travel in sealed memfds where both ends can (the hello's
// and the Ready's shared_memory): a caller sends large arguments as a
// RunShared frame, whose RunRequest has no arguments and whose first byte
// carries one descriptor (SCM_RIGHTS), a memfd sealed against writing,
// growing and shrinking; the server answers a large value with a Value
// frame (empty) carrying such a memfd in place of the result's Event. The
// server passes the arguments' pages on to the worker, and receives the
// value's into the memfd, without reading either: a 100 MB argument round
// trip costs it no copy through its own memory.

// ErrUnexpectedDescriptor is a descriptor a peer sent where the protocol
// has none: more than one for a frame, or one before the hello.
var ErrUnexpectedDescriptor = errors.New("unexpected descriptor")

// descriptorSpace is room for the control message of one descriptor: a
// peer sending more has the rest closed by the kernel (and its connection
// closed here).
var descriptorSpace = syscall.CmsgSpace(4)

// unixConn finds the unix socket under the wrappers a listener put around
// it (the guard, the connection's name), or nil.
func unixConn(nc net.Conn) *net.UnixConn {
	for {
		switch c := nc.(type) {
		case *net.UnixConn:
			return c
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return nil
		}
	}
}

// connReader is what the connection's buffered reader reads from: until
// the hello is verified, the connection as the guard wraps it (any
// descriptor sent is dropped by the kernel, unread); then the socket
// itself, keeping the one descriptor a RunShared frame brings.
type connReader struct {
	c   *conn
	oob []byte
}

func (r *connReader) Read(p []byte) (int, error) {
	c := r.c
	if !c.shares { // shares implies unix
		return c.nc.Read(p)
	}
	if r.oob == nil {
		r.oob = make([]byte, descriptorSpace)
	}
	n, oobn, flags, _, err := c.unix.ReadMsgUnix(p, r.oob)
	n, oobn = max(n, 0), max(oobn, 0) // -1 with an error
	if oobn > 0 || flags&syscall.MSG_CTRUNC != 0 {
		if derr := c.keepDescriptors(r.oob[:oobn], flags&syscall.MSG_CTRUNC != 0); derr != nil {
			return n, derr
		}
	}
	return n, err
}

// keepDescriptors takes the descriptors of one control message: at most one
// may wait for its RunShared frame.
func (c *conn) keepDescriptors(oob []byte, truncated bool) error {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnexpectedDescriptor, err)
	}
	var fds []int
	for i := range msgs {
		got, err := syscall.ParseUnixRights(&msgs[i])
		if err != nil {
			continue // not descriptors (credentials): nothing to keep
		}
		fds = append(fds, got...)
	}
	if truncated || len(fds) > 1 || (len(fds) == 1 && c.pendingFD >= 0) {
		for _, fd := range fds {
			syscall.Close(fd)
		}
		return fmt.Errorf("%w: more than one descriptor for a frame", ErrUnexpectedDescriptor)
	}
	if len(fds) == 1 {
		c.pendingFD = fds[0]
	}
	return nil
}

// takeShared opens the descriptor the RunShared frame just read brought.
func (c *conn) takeShared() (*sealed.File, error) {
	fd := c.pendingFD
	if fd < 0 {
		return nil, fmt.Errorf("%w: a %q frame came without its descriptor", ErrUnexpectedDescriptor, FrameRunShared)
	}
	c.pendingFD = -1
	return sealed.Open(fd, int64(c.s.opts.MaxMessageBytes))
}

// dropPending closes a descriptor no frame took.
func (c *conn) dropPending() {
	if c.pendingFD >= 0 {
		syscall.Close(c.pendingFD)
		c.pendingFD = -1
	}
}

// SharedArguments is the call's arguments, when they came in a memfd.
func (s *stream) SharedArguments() *sealed.File { return s.args }

// SharesValues says the caller takes a large value in a memfd.
func (s *stream) SharesValues() bool { return s.c.creds.SharedMemory && s.c.shares }

// SendSharedValue sends the call's result as a Value frame carrying f's
// descriptor, and takes f over; like the result's Event it is held back for
// the End, and both go in one sendmsg.
func (s *stream) SendSharedValue(f *sealed.File) error {
	c := s.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = AppendHeader(c.wbuf, FrameValueShared, 0)
	c.sendFD = f
	s.sent.Add(f.Size())
	return nil
}

// flushWithDescriptor writes wbuf with the descriptor of sendFD on its
// first byte, and forgets the descriptor (the caller's copy is its own).
func (c *conn) flushWithDescriptor() error {
	f := c.sendFD
	c.sendFD = nil
	defer f.Close()
	rights := syscall.UnixRights(int(f.File().Fd()))
	n, _, err := c.unix.WriteMsgUnix(c.wbuf, rights, nil)
	if err == nil && n < len(c.wbuf) {
		_, err = c.unix.Write(c.wbuf[n:])
	}
	return err
}

// refuseShared answers a RunShared frame whose descriptor is refused (not
// a sealed memfd, too large) with an End; the connection serves on. It
// returns false where the connection should end (the descriptor broke the
// protocol).
func (c *conn) refuseShared(err error) bool {
	var large *sealed.TooLargeError
	switch {
	case errors.As(err, &large):
		c.writeEnd(status.Errorf(codes.ResourceExhausted, "the call's arguments are larger than this server takes "+
			"(--max-message-bytes %d): %v", c.s.opts.MaxMessageBytes, err))
		return true
	case errors.Is(err, ErrUnexpectedDescriptor):
		c.endOnReadError(err)
		return false
	default:
		c.writeEnd(status.Errorf(codes.InvalidArgument, "the call's arguments must come in a sealed memfd: %v", err))
		return true
	}
}
