package workerproto

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDialBackOverAUnixSocket: workers in a network namespace of their own
// dial back through a unix socket, named "unix:PATH".
func TestDialBackOverAUnixSocket(t *testing.T) {
	lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "dialback.sock"))
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(lis, nil)
	done := make(chan error, 1)
	go func() { done <- l.Serve() }()
	defer func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v", err)
		}
	}()
	addr := DialAddress(l.Addr())
	if !strings.HasPrefix(addr, "unix:/") {
		t.Fatalf("DialAddress = %q, want unix: and the socket's path", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	expected := l.Expect("secret")
	defer expected.Cancel()
	if _, err := Dial(ctx, addr, "wrong"); !errors.Is(err, ErrRefused) {
		t.Fatalf("Dial with a wrong token = %v, want ErrRefused", err)
	}
	agentSide, err := Dial(ctx, addr, "secret")
	if err != nil {
		t.Fatal(err)
	}
	defer agentSide.Close()
	serverSide, err := expected.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	serverSide.Close()
}

func TestDialAddressOfTCP(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234}
	if got := DialAddress(addr); got != "127.0.0.1:1234" {
		t.Errorf("DialAddress = %q", got)
	}
}
