package fastcall

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/sealed"
)

// Version is the protocol version a hello must name.
const Version = 1

// Defaults of Options' zero fields.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = 10 * time.Minute
	// DefaultWriteTimeout bounds one write to a caller: one that stopped
	// reading (or was stopped) loses its call, as gRPC's keepalive would
	// drop it (serverapp.KeepaliveTime plus KeepaliveTimeout).
	DefaultWriteTimeout = 40 * time.Second
)

// Handler runs one call: the Functions service's Run.
type Handler func(req *atollv1.RunRequest, stream grpc.ServerStreamingServer[atollv1.RunEvent]) error

// Verifier checks credentials, as auth.Authenticator.Verify does: an API
// key, or (id empty) a worker token.
type Verifier interface {
	Verify(ctx context.Context, id, secret string) (auth.Principal, error)
}

// Guard bounds the connections that have not authenticated, as
// server.ConnGuard does for the gRPC listener.
type Guard interface {
	Listener(net.Listener) net.Listener
	Trust(ctx context.Context)
}

// Options configures a Server. Verifier, Run and Validate are required.
type Options struct {
	Verifier Verifier
	Run      Handler
	// Validate checks a request's field bounds as the gRPC edge does
	// (server.ValidateRequest).
	Validate func(msg any) error
	// Guard, if set, holds unauthenticated connections to its bounds.
	Guard Guard
	// MaxMessageBytes bounds a Run frame (--max-message-bytes).
	MaxMessageBytes  int
	HandshakeTimeout time.Duration
	IdleTimeout      time.Duration
	WriteTimeout     time.Duration
	// OnCallEnd, if set, is told the bytes each call moved both ways.
	OnCallEnd func(bytes int64)
	Logger    *slog.Logger
}

// Server serves lean calls on unix-socket listeners.
type Server struct {
	opts         Options
	log          *slog.Logger
	beforeHello  Limits
	afterHello   Limits
	connSequence atomic.Uint64

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup
}

// New returns a Server with opts.
func New(opts Options) *Server {
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 4 << 20
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		opts: opts, log: log,
		beforeHello: Limits{FrameHello: MaxHelloBytes},
		afterHello:  Limits{FrameRun: opts.MaxMessageBytes, FrameRunShared: opts.MaxMessageBytes, FrameCancel: 0, FramePing: 0},
		listeners:   make(map[net.Listener]struct{}),
		conns:       make(map[*conn]struct{}),
	}
}

// Listen listens on a unix socket at path that only this user may connect
// to, replacing what an earlier run left there.
func Listen(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lean call socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("lean call socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("lean call socket: %w", err)
	}
	return l, nil
}

// Serve accepts connections on lis until Shutdown or Close; it returns nil
// then, or the error that ended accepting.
func (s *Server) Serve(lis net.Listener) error {
	lis = &namedListener{Listener: lis, s: s}
	if s.opts.Guard != nil {
		lis = s.opts.Guard.Listener(lis)
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		lis.Close()
		return nil
	}
	s.listeners[lis] = struct{}{}
	s.mu.Unlock()
	for {
		nc, err := lis.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			delete(s.listeners, lis)
			s.mu.Unlock()
			if closing {
				return nil
			}
			return err
		}
		c := &conn{s: s, nc: nc, unix: unixConn(nc), pendingFD: -1}
		c.br = bufio.NewReaderSize(&connReader{c: c}, 64<<10)
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting connections and calls: idle connections close
// now, the others when their call ends. It does not wait.
func (s *Server) Shutdown() {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	var idle []*conn
	for c := range s.conns {
		if !c.busy.Load() {
			idle = append(idle, c)
		}
	}
	s.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
}

// Drain shuts down and waits for the calls in flight to end.
func (s *Server) Drain() {
	s.Shutdown()
	s.wg.Wait()
}

// Close shuts down, cuts every connection, and waits for their calls'
// handlers to return.
func (s *Server) Close() {
	s.Shutdown()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// namedListener gives each connection an address of its own: a unix
// socket's peers are all unnamed, and the guard tells connections apart by
// their address.
type namedListener struct {
	net.Listener
	s *Server
}

func (l *namedListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &namedConn{Conn: nc, addr: connAddr(fmt.Sprintf("%s#%d", l.Addr().String(), l.s.connSequence.Add(1)))}, nil
}

type namedConn struct {
	net.Conn
	addr connAddr
}

func (c *namedConn) RemoteAddr() net.Addr { return c.addr }

// NetConn is the connection named.
func (c *namedConn) NetConn() net.Conn { return c.Conn }

type connAddr string

func (connAddr) Network() string  { return "unix" }
func (a connAddr) String() string { return string(a) }

// hello is the client's first frame.
type hello struct {
	Version  int               `json:"version"`
	Metadata map[string]string `json:"metadata"`
	// SharedMemory says the client sends and takes large payloads in
	// sealed memfds (shared.go).
	SharedMemory bool `json:"shared_memory,omitempty"`
}

// ready is the server's answer to a hello.
type ready struct {
	// SharedMemory says the server takes large arguments in sealed memfds.
	SharedMemory bool `json:"shared_memory"`
}

// conn is one caller's connection.
type conn struct {
	s  *Server
	nc net.Conn
	br *bufio.Reader
	// unix is the socket under nc's wrappers, for descriptors; nil if nc
	// is not one.
	unix *net.UnixConn
	// shares says descriptors are taken (the hello is verified and this
	// system has sealed memfds); pendingFD is one received and not yet
	// taken by its RunShared frame, or -1. Only serve's goroutine reads.
	shares    bool
	pendingFD int
	// base carries the peer, as gRPC's contexts do.
	base  context.Context
	creds hello

	// wbuf gathers frames for one write; a large value is not copied into
	// it: pieces holds what goes before wbuf, the value among them.
	wmu    sync.Mutex
	wbuf   []byte
	pieces net.Buffers
	// sendFD is a value's memfd whose descriptor goes with wbuf's first
	// byte.
	sendFD *sealed.File

	// busy says a call is in flight; cancel and done are its, guarded by
	// mu.
	busy   atomic.Bool
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}

	// calls hands each call to the connection's call goroutine, started
	// with the first: its stack, grown by that call, serves the next ones
	// without growing again. Only serve sends on it.
	calls chan func()
}

func (c *conn) serve() {
	defer c.s.wg.Done()
	defer func() {
		c.cancelCall()
		c.waitCall()
		if c.calls != nil {
			close(c.calls)
		}
		c.nc.Close()
		c.dropPending()
		c.wmu.Lock()
		if c.sendFD != nil {
			c.sendFD.Close()
			c.sendFD = nil
		}
		c.wmu.Unlock()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	}()
	c.base = peer.NewContext(context.Background(), &peer.Peer{Addr: c.nc.RemoteAddr(), LocalAddr: c.nc.LocalAddr()})
	c.nc.SetReadDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	if err := c.hello(); err != nil {
		c.s.log.Info("lean call connection refused", "peer", c.nc.RemoteAddr().String(), "err", err)
		c.writeEnd(err)
		return
	}
	if c.s.opts.Guard != nil {
		c.s.opts.Guard.Trust(c.base)
	}
	c.shares = sealed.Supported() && c.unix != nil
	readyPayload, _ := json.Marshal(ready{SharedMemory: c.shares})
	if err := c.write(FrameReady, readyPayload); err != nil {
		return
	}
	c.nc.SetReadDeadline(time.Now().Add(c.s.opts.IdleTimeout))
	for {
		kind, payload, err := ReadFrame(c.br, c.s.afterHello)
		if err != nil {
			c.endOnReadError(err)
			return
		}
		switch kind {
		case FramePing:
			if c.write(FramePong, nil) != nil {
				return
			}
		case FrameCancel:
			c.cancelCall()
		case FrameRun, FrameRunShared:
			if c.busy.Load() {
				c.s.log.Info("lean call connection closed", "peer", c.nc.RemoteAddr().String(), "err", "a second call while one runs")
				return
			}
			var args *sealed.File
			if kind == FrameRunShared {
				if !c.shares {
					c.endOnReadError(fmt.Errorf("%w: type %q on a connection without shared memory", ErrUnexpectedFrame, kind))
					return
				}
				if args, err = c.takeShared(); err != nil {
					if c.refuseShared(err) {
						continue
					}
					return
				}
			}
			c.startCall(payload, args)
		}
	}
}

// endOnReadError tells the peer why its connection ends, where it broke
// the protocol; a peer that went away is told nothing.
func (c *conn) endOnReadError(err error) {
	switch {
	case errors.Is(err, ErrFrameTooLarge):
		c.s.log.Info("lean call connection closed", "peer", c.nc.RemoteAddr().String(), "err", err)
		c.cancelCall()
		c.waitCall()
		c.writeEnd(status.Errorf(codes.ResourceExhausted, "the call's request is larger than this server takes "+
			"(--max-message-bytes %d): %v", c.s.opts.MaxMessageBytes, err))
	case errors.Is(err, ErrUnexpectedFrame), errors.Is(err, ErrUnexpectedDescriptor):
		c.s.log.Info("lean call connection closed", "peer", c.nc.RemoteAddr().String(), "err", err)
		c.cancelCall()
		c.waitCall()
		c.writeEnd(status.Errorf(codes.InvalidArgument, "protocol error: %v", err))
	}
}

// hello reads and checks the client's hello, and authenticates it.
func (c *conn) hello() error {
	kind, payload, err := ReadFrame(c.br, c.s.beforeHello)
	switch {
	case errors.Is(err, ErrFrameTooLarge):
		return status.Errorf(codes.ResourceExhausted, "the hello is too large: %v", err)
	case errors.Is(err, ErrUnexpectedFrame):
		return status.Errorf(codes.InvalidArgument, "a connection must begin with a hello frame: %v", err)
	case err != nil:
		return err
	case kind != FrameHello:
		return status.Errorf(codes.InvalidArgument, "a connection must begin with a hello frame")
	}
	if err := json.Unmarshal(payload, &c.creds); err != nil {
		return status.Errorf(codes.InvalidArgument, "%v: %v", ErrBadHello, err)
	}
	if c.creds.Version != Version {
		return status.Errorf(codes.FailedPrecondition, "%v: protocol version %d, this server speaks %d", ErrBadHello, c.creds.Version, Version)
	}
	_, err = c.verify()
	return err
}

// verify authenticates the hello's credentials. It runs again for every
// call, as gRPC's interceptors do, so that a key revoked while the
// connection is open stops working; the authenticator caches verified
// keys, so this costs a hash.
func (c *conn) verify() (auth.Principal, error) {
	md := c.creds.Metadata
	id, secret, token := md[auth.MetadataKeyID], md[auth.MetadataKeySecret], md[auth.MetadataWorkerToken]
	if token != "" {
		if id != "" || secret != "" {
			return auth.Principal{}, status.Error(codes.Unauthenticated, "send either an API key or a worker token, not both")
		}
		id, secret = "", token
	}
	p, err := c.s.opts.Verifier.Verify(c.base, id, secret)
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, auth.ErrUnauthenticated):
		return auth.Principal{}, status.Error(codes.Unauthenticated, err.Error())
	default:
		c.s.log.Error("authentication failed", "transport", "lean", "err", err)
		return auth.Principal{}, status.Error(codes.Internal, "authentication failed: internal server error")
	}
}

// startCall decodes, checks and starts one call; a request refused is
// answered with its End and the connection serves on.
// args, if not nil, is the arguments' memfd (a RunShared frame); the call
// owns it.
func (c *conn) startCall(payload []byte, args *sealed.File) {
	req := new(atollv1.RunRequest)
	refuse := func(err error) {
		if args != nil {
			args.Close()
		}
		c.writeEnd(err)
	}
	if err := unmarshalRun(payload, req); err != nil {
		refuse(status.Errorf(codes.InvalidArgument, "the request is not a valid %T message: %v", req, err))
		return
	}
	if args != nil && len(req.GetArguments()) > 0 {
		refuse(status.Error(codes.InvalidArgument, "a call's arguments come either in its request or in shared memory, not both"))
		return
	}
	if err := c.s.opts.Validate(req); err != nil {
		refuse(status.Error(codes.InvalidArgument, err.Error()))
		return
	}
	p, err := c.verify()
	if err != nil {
		refuse(err)
		return
	}
	if c.s.isClosing() {
		refuse(status.Error(codes.Unavailable, ErrShuttingDown.Error()))
		return
	}
	ctx, cancel := context.WithCancel(auth.NewContext(c.base, p))
	done := make(chan struct{})
	c.mu.Lock()
	c.cancel, c.done = cancel, done
	c.mu.Unlock()
	c.busy.Store(true)
	// A call may run for hours without a frame from the caller.
	c.nc.SetReadDeadline(time.Time{})
	c.runCall(func() {
		defer close(done)
		st := &stream{ctx: ctx, c: c, args: args}
		err := c.s.opts.Run(req, st)
		cancel()
		moved := int64(len(payload)) + st.sent.Load()
		if args != nil {
			moved += args.Size()
			args.Close()
		}
		if c.s.opts.OnCallEnd != nil {
			c.s.opts.OnCallEnd(moved)
		}
		// Idle before the End goes: the caller may send its next call
		// the moment it reads it.
		c.nc.SetReadDeadline(time.Now().Add(c.s.opts.IdleTimeout))
		c.busy.Store(false)
		c.writeEnd(err)
		if c.s.isClosing() {
			c.nc.Close()
		}
	})
}

// runCall runs f on the connection's call goroutine. One call runs at a
// time (serve refuses a second), so the next is handed over without
// waiting even while the last one's goroutine is finishing.
func (c *conn) runCall(f func()) {
	if c.calls == nil {
		c.calls = make(chan func(), 1)
		go func() {
			for f := range c.calls {
				f()
			}
		}()
	}
	c.calls <- f
}

func (c *conn) cancelCall() {
	c.mu.Lock()
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (c *conn) waitCall() {
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if done != nil {
		<-done
	}
}

// writeEnd sends the End of a call, or of a refused connection: the status
// code and its message.
func (c *conn) writeEnd(err error) {
	st := status.Convert(err)
	if err != nil && st.Code() == codes.Unknown {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			st = status.FromContextError(err)
		} else if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
			return // the peer is gone or never spoke: nothing to tell
		}
	}
	payload := append([]byte{byte(st.Code())}, st.Message()...)
	_ = c.write(FrameEnd, payload)
}

// write sends one frame.
func (c *conn) write(kind byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = AppendFrame(c.wbuf, kind, payload)
	return c.flush()
}

// writeEvent sends one event, marshalled straight after its header. The
// call's last event (its result or failure) is held back for the End that
// follows it at once: one write, and one wakeup of the caller, for both.
func (c *conn) writeEvent(ev *atollv1.RunEvent) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var n int
	if head, value, ok := largeValue(ev); ok {
		n = len(head) + len(value)
		c.pieces = append(c.pieces, append(AppendHeader(c.wbuf, FrameEvent, n), head...), value)
		c.wbuf = nil
	} else {
		n = proto.Size(ev)
		b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(AppendHeader(c.wbuf, FrameEvent, n), ev)
		if err != nil {
			return 0, err
		}
		c.wbuf = b
	}
	switch ev.GetEvent().(type) {
	case *atollv1.RunEvent_Result, *atollv1.RunEvent_Failure:
		return n, nil
	}
	return n, c.flush()
}

// flush writes what wbuf holds and empties it; a large buffer is not kept
// for the next frame.
func (c *conn) flush() error {
	c.nc.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
	var err error
	if c.sendFD != nil {
		err = c.flushWithDescriptor()
	} else if c.pieces != nil {
		// One writev for the pieces and what followed them.
		bufs := append(c.pieces, c.wbuf)
		_, err = bufs.WriteTo(c.nc)
		c.pieces = nil
	} else {
		_, err = c.nc.Write(c.wbuf)
	}
	c.wbuf = c.wbuf[:0]
	if cap(c.wbuf) > 1<<20 {
		c.wbuf = nil
	}
	return err
}

// stream is the grpc.ServerStreamingServer the handler sends on.
type stream struct {
	ctx context.Context
	c   *conn
	// args is the arguments' memfd of a RunShared frame, else nil.
	args *sealed.File
	// sent counts event bytes; the handler's callbacks may send from
	// goroutines of their own.
	sent atomic.Int64
}

func (s *stream) Send(ev *atollv1.RunEvent) error {
	n, err := s.c.writeEvent(ev)
	s.sent.Add(int64(n))
	return err
}

func (s *stream) Context() context.Context { return s.ctx }

func (s *stream) SendMsg(m any) error {
	ev, ok := m.(*atollv1.RunEvent)
	if !ok {
		return status.Errorf(codes.Internal, "a lean call sends RunEvent messages, not %T", m)
	}
	return s.Send(ev)
}

// RecvMsg: the call's one request came with its Run frame.
func (s *stream) RecvMsg(any) error { return io.EOF }

// Headers and trailers have no place in the lean protocol.
func (s *stream) SetHeader(metadata.MD) error  { return nil }
func (s *stream) SendHeader(metadata.MD) error { return nil }
func (s *stream) SetTrailer(metadata.MD)       {}
