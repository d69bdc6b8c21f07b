package workerproto

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// HandshakeMagic opens a dialing worker's handshake; it names the protocol
// and its version.
const HandshakeMagic = "atoll-worker/1\n"

// The server's one-byte answer to a handshake.
const (
	handshakeOK      = 'K'
	handshakeRefused = 'N'
)

// tokenHash indexes expected tokens: looking a secret up by its own value
// would let lookup timing say something about it.
type tokenHash [sha256.Size]byte

// Listener accepts workers that dial back and hands each, once it has shown
// a token the server expects, to whoever expects it.
type Listener struct {
	l     net.Listener
	log   *slog.Logger
	slots chan struct{}

	mu       sync.Mutex
	expected map[tokenHash]*Expected
}

// NewListener serves handshakes on l once Serve runs. log may be nil.
func NewListener(l net.Listener, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{l: l, log: log, slots: make(chan struct{}, MaxHandshakes), expected: make(map[tokenHash]*Expected)}
}

// Addr is the address workers dial.
func (l *Listener) Addr() net.Addr { return l.l.Addr() }

// Close stops accepting; connections already handed over are the
// receivers'.
func (l *Listener) Close() error { return l.l.Close() }

// Serve accepts connections until the listener is closed; it then returns
// nil.
func (l *Listener) Serve() error {
	for {
		c, err := l.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept workers: %w", err)
		}
		select {
		case l.slots <- struct{}{}:
		default:
			l.log.Warn("too many worker handshakes at once; dropping a connection", "remote", c.RemoteAddr().String())
			c.Close()
			continue
		}
		go func() {
			defer func() { <-l.slots }()
			l.handshake(c)
		}()
	}
}

// Expected is a worker the server waits for.
type Expected struct {
	l    *Listener
	hash tokenHash
	conn chan net.Conn // holds at most the one connection the token admits
	// cancelled is guarded by the listener's mutex.
	cancelled bool
}

// Expect registers token; the first connection to present it is handed to
// the returned Expected's Wait. Cancel it when the worker is gone.
func (l *Listener) Expect(token string) *Expected {
	e := &Expected{l: l, hash: sha256.Sum256([]byte(token)), conn: make(chan net.Conn, 1)}
	l.mu.Lock()
	l.expected[e.hash] = e
	l.mu.Unlock()
	return e
}

// Wait returns the worker's connection once it has dialed back, or ctx's
// error.
func (e *Expected) Wait(ctx context.Context) (io.ReadWriteCloser, error) {
	select {
	case c := <-e.conn:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Cancel forgets the token; a connection handed over but never waited for
// is closed.
func (e *Expected) Cancel() {
	e.l.mu.Lock()
	defer e.l.mu.Unlock()
	if e.l.expected[e.hash] == e {
		delete(e.l.expected, e.hash)
	}
	e.cancelled = true
	select {
	case c := <-e.conn:
		c.Close()
	default:
	}
}

// handshake reads the worker's token within HandshakeTimeout and hands the
// connection over, or refuses it.
func (l *Listener) handshake(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(HandshakeTimeout))
	token, err := readHello(bufio.NewReaderSize(c, len(HandshakeMagic)+binary.MaxVarintLen64+MaxTokenBytes))
	if err != nil {
		l.log.Warn("worker handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	h := tokenHash(sha256.Sum256(token))
	l.mu.Lock()
	e, ok := l.expected[h]
	if ok {
		delete(l.expected, h)
	}
	l.mu.Unlock()
	if !ok {
		l.log.Warn("a worker dialed back with a token the server does not expect", "remote", c.RemoteAddr().String())
		_, _ = c.Write([]byte{handshakeRefused})
		c.Close()
		return
	}
	if _, err := c.Write([]byte{handshakeOK}); err != nil {
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.cancelled {
		c.Close() // the worker was given up on during the handshake
		return
	}
	e.conn <- c // never blocks: the token admitted this connection alone
}

// readHello reads the magic and the token. The reader is sized to the
// largest valid hello, so nothing read ahead belongs to the frames after.
func readHello(r *bufio.Reader) ([]byte, error) {
	magic := make([]byte, len(HandshakeMagic))
	if _, err := io.ReadFull(r, magic); err != nil {
		return nil, fmt.Errorf("%w: handshake: %w", ErrProtocol, err)
	}
	if string(magic) != HandshakeMagic {
		return nil, fmt.Errorf("%w: not an atoll worker handshake", ErrProtocol)
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: handshake token length: %w", ErrProtocol, err)
	}
	if n == 0 || n > MaxTokenBytes {
		return nil, fmt.Errorf("%w: a %d byte token (want 1 to %d)", ErrProtocol, n, MaxTokenBytes)
	}
	token := make([]byte, n)
	if _, err := io.ReadFull(r, token); err != nil {
		return nil, fmt.Errorf("%w: handshake token: %w", ErrProtocol, err)
	}
	if r.Buffered() > 0 {
		return nil, fmt.Errorf("%w: bytes after the handshake before the server's answer", ErrProtocol)
	}
	return token, nil
}

// unixPrefix marks a listener address that is a unix socket's path.
const unixPrefix = "unix:"

// DialAddress is how a worker names the listener l listens at, for Dial:
// host:port, or "unix:" and a socket's path.
func DialAddress(addr net.Addr) string {
	if addr.Network() == "unix" {
		return unixPrefix + addr.String()
	}
	return addr.String()
}

// Dial connects to a server's worker listener at addr (as DialAddress
// names it) and presents token; it returns the connection, ready for
// NewAgentConn, once the server has accepted it, or ErrRefused.
func Dial(ctx context.Context, addr, token string) (net.Conn, error) {
	if len(token) == 0 || len(token) > MaxTokenBytes {
		return nil, fmt.Errorf("worker token of %d bytes (want 1 to %d)", len(token), MaxTokenBytes)
	}
	network, dialAddr := "tcp", addr
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		network, dialAddr = "unix", path
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, dialAddr)
	if err != nil {
		return nil, fmt.Errorf("dial the server at %s: %w", addr, err)
	}
	deadline := time.Now().Add(HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	hello := append([]byte(HandshakeMagic), binary.AppendUvarint(nil, uint64(len(token)))...)
	hello = append(hello, token...)
	if _, err := c.Write(hello); err != nil {
		c.Close()
		return nil, fmt.Errorf("worker handshake with %s: %w", addr, err)
	}
	var answer [1]byte
	if _, err := io.ReadFull(c, answer[:]); err != nil {
		c.Close()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("worker handshake with %s: %w", addr, ErrRefused)
		}
		return nil, fmt.Errorf("worker handshake with %s: %w", addr, err)
	}
	if answer[0] != handshakeOK {
		c.Close()
		return nil, fmt.Errorf("worker handshake with %s: %w", addr, ErrRefused)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
