package auth_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/atoll-dev/atoll/internal/auth"
)

// unixPair returns the server end of a fresh unix-socket connection from
// this process.
func unixPair(t *testing.T) net.Conn {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	client, err := net.Dial("unix", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return server
}

func TestPeerCredentials(t *testing.T) {
	tests := []struct {
		name    string
		uid     int
		refused bool
	}{
		{"same user", os.Getuid(), false},
		{"another user", os.Getuid() + 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, info, err := auth.PeerCredentials(tt.uid).ServerHandshake(unixPair(t))
			if tt.refused {
				if !errors.Is(err, auth.ErrPeerRefused) {
					t.Fatalf("handshake = %v, want ErrPeerRefused", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			peer := info.(auth.PeerInfo)
			if peer.UID != os.Getuid() || peer.PID != os.Getpid() {
				t.Errorf("peer = uid %d pid %d, want uid %d pid %d", peer.UID, peer.PID, os.Getuid(), os.Getpid())
			}
		})
	}
}

func TestPeerCredentialsRefuseOtherTransports(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	if _, _, err := auth.PeerCredentials(os.Getuid()).ServerHandshake(server); !errors.Is(err, auth.ErrPeerRefused) {
		t.Fatalf("handshake over a pipe = %v, want ErrPeerRefused", err)
	}
}
