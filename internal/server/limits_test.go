package server

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/peer"
)

// guarded starts a ConnGuard over a loopback listener that accepts
// connections and reads each until it fails; it returns the guard, the
// address and a channel of each connection's read error.
func guarded(t *testing.T, opts ConnGuardOptions) (*ConnGuard, string, <-chan error) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := NewConnGuard(opts)
	lis := g.Listener(inner)
	t.Cleanup(func() { lis.Close() })
	errs := make(chan error, 16)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				_, err := io.Copy(io.Discard, c)
				c.Close()
				errs <- err
			}()
		}
	}()
	return g, inner.Addr().String(), errs
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConnGuardClosesTheOldestUnauthenticatedConnection(t *testing.T) {
	g, addr, errs := guarded(t, ConnGuardOptions{MaxUnauthenticated: 2})
	first := dial(t, addr)
	dial(t, addr)
	waitFor(t, "two held connections", func() bool { return g.Untrusted() == 2 })
	dial(t, addr)
	// The first is closed by the server: reading it ends.
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := first.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("oldest connection read: %v, want EOF (closed for the new one)", err)
	}
	<-errs
	if n := g.Untrusted(); n != 2 {
		t.Fatalf("%d unauthenticated connections held, want the cap of 2", n)
	}
}

func TestConnGuardCutsOffAPeerThatSendsTooMuchBeforeAuthenticating(t *testing.T) {
	_, addr, errs := guarded(t, ConnGuardOptions{PreAuthBytes: 1000})
	c := dial(t, addr)
	if _, err := c.Write(make([]byte, 4000)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, errPreAuthBytes) {
			t.Fatalf("server read: %v, want errPreAuthBytes", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server kept reading past the pre-authentication allowance")
	}
}

func TestConnGuardTrustsAnAuthenticatedConnection(t *testing.T) {
	g, addr, errs := guarded(t, ConnGuardOptions{PreAuthBytes: 1000, MaxUnauthenticated: 1})
	c := dial(t, addr)
	waitFor(t, "the connection held", func() bool { return g.Untrusted() == 1 })
	local := c.LocalAddr()
	g.Trust(peer.NewContext(context.Background(), &peer.Peer{Addr: local}))
	if n := g.Untrusted(); n != 0 {
		t.Fatalf("%d unauthenticated connections after Trust, want 0", n)
	}
	if _, err := c.Write(make([]byte, 100_000)); err != nil {
		t.Fatal(err)
	}
	dial(t, addr) // a new unauthenticated one does not push the trusted one out
	c.(*net.TCPConn).CloseWrite()
	if err := <-errs; err != nil {
		t.Fatalf("trusted connection read: %v, want its whole stream", err)
	}
}
