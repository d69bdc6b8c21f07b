package supervisor

import (
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/atoll-dev/atoll/internal/auth"
)

// sessions counts each calling process's connections. A process whose last
// connection closed has exited (or let go of host=local): its idle workers
// are torn down, as they were when each process kept its own. With no
// connection left for idleExit, the supervisor stops.
type sessions struct {
	credentials.TransportCredentials
	ended    func(pid int)
	idleExit time.Duration
	idle     func()

	mu    sync.Mutex
	conns map[int]int
	total int
	timer *time.Timer
}

func newSessions(creds credentials.TransportCredentials, ended func(pid int), idleExit time.Duration, idle func()) *sessions {
	s := &sessions{TransportCredentials: creds, ended: ended, idleExit: idleExit, idle: idle, conns: make(map[int]int)}
	s.timer = time.AfterFunc(idleExit, idle)
	return s
}

// ServerHandshake checks the peer as the wrapped credentials do and counts
// the connection until it closes.
func (s *sessions) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := s.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		return nil, nil, err
	}
	pid := info.(auth.PeerInfo).PID
	s.mu.Lock()
	s.conns[pid]++
	s.total++
	s.timer.Stop()
	s.mu.Unlock()
	return &sessionConn{Conn: conn, close: func() { s.closed(pid) }}, info, nil
}

func (s *sessions) closed(pid int) {
	s.mu.Lock()
	s.conns[pid]--
	last := s.conns[pid] == 0
	if last {
		delete(s.conns, pid)
	}
	s.total--
	if s.total == 0 {
		s.timer.Reset(s.idleExit)
	}
	s.mu.Unlock()
	if last {
		s.ended(pid)
	}
}

func (s *sessions) Clone() credentials.TransportCredentials { return s }

// sessionConn reports its first Close.
type sessionConn struct {
	net.Conn
	once  sync.Once
	close func()
}

func (c *sessionConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.close)
	return err
}
