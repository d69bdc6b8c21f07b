package server

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/peer"
)

// Bounds of the API edge for peers that have not authenticated, and the
// defaults of the server's flags for everyone. docs/limits.md lists them
// all, with the bounds of every request field (validate.go).
const (
	// DefaultMaxUnauthenticatedConns is how many connections on which no
	// call has yet authenticated the server holds at once. Beyond it the
	// oldest of them is closed to make room: a flood of idle connections
	// costs the flooder its oldest ones, never a new client its turn.
	DefaultMaxUnauthenticatedConns = 256
	// DefaultPreAuthBytes is what a connection may send before one of its
	// calls authenticates: the TLS and HTTP/2 handshakes, headers and a
	// few unauthenticated health checks fit many times over. A peer that
	// sends more without a key is cut off.
	DefaultPreAuthBytes = 64 << 10
	// DefaultHandshakeTimeout bounds the TLS and HTTP/2 handshakes of a new
	// connection.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultIdleTimeout closes a connection with no call in flight for
	// this long; clients reconnect on their next call.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultMaxMetadataBytes bounds a call's headers (its metadata).
	DefaultMaxMetadataBytes = 16 << 10
)

// ConnGuardOptions configures NewConnGuard; zero fields take the defaults.
type ConnGuardOptions struct {
	MaxUnauthenticated int
	PreAuthBytes       int64
	Logger             *slog.Logger
}

// ConnGuard holds peers that have not authenticated to small bounds at the
// connection level, where gRPC has none: how many such connections stay
// open (the oldest is closed for a new one) and how many bytes each may send
// before a call on it authenticates. A connection is trusted, and free of
// both bounds, from the first call on it that authenticates (Trust, given to
// auth.OnAuthenticated); authentication itself happens from the call's
// headers, before its message is read (auth.TapHandle).
//
// Connections are told apart by their remote address, which is unique per
// TCP connection on one listener: a ConnGuard is for TCP listeners.
type ConnGuard struct {
	max     int
	preAuth int64
	log     *slog.Logger

	mu sync.Mutex
	// pending holds the untrusted connections, oldest first.
	pending *list.List
	byAddr  map[string]*guardedConn
}

// NewConnGuard returns a guard with opts' bounds.
func NewConnGuard(opts ConnGuardOptions) *ConnGuard {
	g := &ConnGuard{max: opts.MaxUnauthenticated, preAuth: opts.PreAuthBytes, log: opts.Logger,
		pending: list.New(), byAddr: make(map[string]*guardedConn)}
	if g.max <= 0 {
		g.max = DefaultMaxUnauthenticatedConns
	}
	if g.preAuth <= 0 {
		g.preAuth = DefaultPreAuthBytes
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	return g
}

// Listener returns lis with every accepted connection under the guard.
func (g *ConnGuard) Listener(lis net.Listener) net.Listener {
	return &guardedListener{Listener: lis, g: g}
}

// Trust frees the connection of the call whose context ctx is from the
// guard's bounds. A context without a peer, or a peer the guard does not
// hold, is ignored.
func (g *ConnGuard) Trust(ctx context.Context) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return
	}
	g.mu.Lock()
	c := g.byAddr[p.Addr.String()]
	if c != nil && c.elem != nil {
		g.pending.Remove(c.elem)
		c.elem = nil
		c.trusted.Store(true)
	}
	g.mu.Unlock()
}

// Untrusted returns how many connections are held that have not
// authenticated.
func (g *ConnGuard) Untrusted() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pending.Len()
}

func (g *ConnGuard) admit(c *guardedConn) {
	var evicted *guardedConn
	g.mu.Lock()
	if g.pending.Len() >= g.max {
		evicted = g.pending.Front().Value.(*guardedConn)
	}
	c.elem = g.pending.PushBack(c)
	g.byAddr[c.addr] = c
	g.mu.Unlock()
	// Closed outside the lock: Close takes it to forget the connection.
	if evicted != nil {
		g.log.Debug("closing the oldest unauthenticated connection for a new one", "peer", evicted.addr, "limit", g.max)
		evicted.Close()
	}
}

func (g *ConnGuard) forget(c *guardedConn) {
	g.mu.Lock()
	if c.elem != nil {
		g.pending.Remove(c.elem)
		c.elem = nil
	}
	if g.byAddr[c.addr] == c {
		delete(g.byAddr, c.addr)
	}
	g.mu.Unlock()
}

type guardedListener struct {
	net.Listener
	g *ConnGuard
}

func (l *guardedListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &guardedConn{Conn: conn, g: l.g, addr: conn.RemoteAddr().String()}
	l.g.admit(c)
	return c, nil
}

// errPreAuthBytes ends the connection of a peer that sent more than the
// pre-authentication allowance.
var errPreAuthBytes = errors.New("connection sent too much before authenticating")

type guardedConn struct {
	net.Conn
	g    *ConnGuard
	addr string
	// elem is the connection's place in g.pending while untrusted; guarded
	// by g.mu.
	elem    *list.Element
	trusted atomic.Bool
	// read counts bytes read while untrusted; only the connection's one
	// reading goroutine touches it.
	read int64
	once sync.Once
}

func (c *guardedConn) Read(b []byte) (int, error) {
	if c.trusted.Load() {
		return c.Conn.Read(b)
	}
	// Never read past the allowance: what is read is what gRPC buffers.
	if left := c.g.preAuth - c.read; int64(len(b)) > left+1 {
		b = b[:left+1]
	}
	n, err := c.Conn.Read(b)
	c.read += int64(n)
	if c.read > c.g.preAuth && !c.trusted.Load() {
		c.g.log.Info("closing a connection that sent too much before authenticating", "peer", c.addr, "limit_bytes", c.g.preAuth)
		c.Close()
		return 0, errPreAuthBytes
	}
	return n, err
}

// NetConn is the connection guarded.
func (c *guardedConn) NetConn() net.Conn { return c.Conn }

func (c *guardedConn) Close() error {
	var err error
	c.once.Do(func() {
		c.g.forget(c)
		err = c.Conn.Close()
	})
	return err
}
