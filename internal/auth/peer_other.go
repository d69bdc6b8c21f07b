//go:build !linux

package auth

import (
	"fmt"
	"net"
)

// peerOf refuses every peer: SO_PEERCRED, which names the peer's process,
// is Linux's; host=local's supervisor needs it.
func peerOf(*net.UnixConn) (PeerInfo, error) {
	return PeerInfo{}, fmt.Errorf("%w: peer credentials are not implemented on this system", ErrPeerRefused)
}
