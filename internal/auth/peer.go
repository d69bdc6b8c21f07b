package auth

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// PeerInfo is what the kernel says about the process at the other end of a
// unix socket (SO_PEERCRED), taken when it connected.
type PeerInfo struct {
	credentials.CommonAuthInfo
	UID int
	PID int
}

// AuthType names the mechanism for gRPC.
func (PeerInfo) AuthType() string { return "peercred" }

// PeerCredentials returns gRPC transport credentials for a unix socket that
// admit only processes running as uid: the kernel's record of the peer
// (SO_PEERCRED) cannot be forged by the peer, unlike anything it sends. The
// socket's directory permissions keep other users out already; this check
// holds even where they are wrong, and names the calling process.
func PeerCredentials(uid int) credentials.TransportCredentials {
	return peerCredentials{uid: uid}
}

type peerCredentials struct{ uid int }

func (c peerCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("%w: peer credentials need a unix socket, not %T", ErrPeerRefused, conn)
	}
	info, err := peerOf(uc)
	if err != nil {
		return nil, nil, err
	}
	if info.UID != c.uid {
		return nil, nil, fmt.Errorf("%w: uid %d, pid %d (this socket serves uid %d)", ErrPeerRefused, info.UID, info.PID, c.uid)
	}
	info.SecurityLevel = credentials.PrivacyAndIntegrity // a unix socket never leaves the kernel
	return conn, info, nil
}

func (peerCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, fmt.Errorf("%w: peer credentials are for servers only", ErrPeerRefused)
}

func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (c peerCredentials) Clone() credentials.TransportCredentials { return c }

func (peerCredentials) OverrideServerName(string) error { return nil }

// PeerAccount is the account of a local process: each calling process is an
// account of its own, so its warm workers serve no other process and end
// when it does.
func PeerAccount(pid int) string { return fmt.Sprintf("local-%d", pid) }

// PeerUnaryServerInterceptor puts the Principal of the socket's peer, which
// PeerCredentials checked, in every unary handler's context.
func PeerUnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := peerContext(ctx)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// PeerStreamServerInterceptor is PeerUnaryServerInterceptor for streams.
func PeerStreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := peerContext(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, &principalStream{ServerStream: ss, ctx: ctx})
	}
}

func peerContext(ctx context.Context) (context.Context, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer credentials: connect through the local socket")
	}
	info, ok := p.AuthInfo.(PeerInfo)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer credentials: connect through the local socket")
	}
	return NewContext(ctx, Principal{Account: PeerAccount(info.PID), PeerPID: info.PID}), nil
}
