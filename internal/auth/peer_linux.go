package auth

import (
	"fmt"
	"net"
	"syscall"
)

func peerOf(conn *net.UnixConn) (PeerInfo, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return PeerInfo{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return PeerInfo{}, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return PeerInfo{}, fmt.Errorf("peer credentials: %w", credErr)
	}
	return PeerInfo{UID: int(cred.Uid), PID: int(cred.Pid)}, nil
}
