package serverapp

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/fastcall"
	"github.com/atoll-dev/atoll/internal/server"
)

// Lean local calls (internal/fastcall): Run calls from this machine's
// callers go over a unix socket beside the data directory, framed without
// HTTP/2, to the same Run handler. Callers learn the socket from a header
// of their first gRPC Run, sent to loopback peers only.
const (
	leanCallSocket = "calls.sock"
	// LeanSocketHeader is the response header of a Run call that names the
	// lean call socket.
	LeanSocketHeader = "x-atoll-lean-socket"
)

// leanSocketPath is <data-dir>/calls.sock, or, where that is too long for
// a socket's path, one beside the workers' short directory
// (shortSocketBase).
func (a *app) leanSocketPath() (string, error) {
	path := filepath.Join(a.dataDir, leanCallSocket)
	if len(path) <= maxSocketPath {
		return path, nil
	}
	short, err := a.shortSocketBase()
	if err != nil {
		return "", fmt.Errorf("lean call socket: %w", err)
	}
	return short + "-" + leanCallSocket, nil
}

// serveLeanCalls serves lean calls until the server stops: from ctx's end
// it takes no new calls, and serve waits for those in flight as it does
// for gRPC's (drainLeanCalls).
func (a *app) serveLeanCalls(ctx context.Context) error {
	path, err := a.leanSocketPath()
	if err != nil {
		return err
	}
	lis, err := fastcall.Listen(path)
	if err != nil {
		return err
	}
	edge := a.cfg.Edge
	if edge.MaxMessageBytes <= 0 {
		edge.MaxMessageBytes = server.DefaultMaxMessageBytes
	}
	log := a.log.With("component", "leancalls")
	srv := fastcall.New(fastcall.Options{
		Verifier:         a.authn,
		Run:              a.functions.Run,
		Validate:         server.ValidateRequest,
		Guard:            a.guard,
		MaxMessageBytes:  edge.MaxMessageBytes,
		HandshakeTimeout: edge.HandshakeTimeout,
		IdleTimeout:      edge.IdleTimeout,
		OnCallEnd:        a.memory.afterCall,
		Logger:           log,
	})
	a.lean = srv
	go func() {
		if err := srv.Serve(lis); err != nil {
			log.Error("lean call socket stopped", "err", err)
		}
	}()
	stop := context.AfterFunc(ctx, srv.Shutdown)
	a.undo = append(a.undo, func() { stop(); srv.Close(); os.Remove(path) })
	a.leanPath = path
	log.Info("serving local calls", "socket", path)
	return nil
}

// drainLeanCalls stops the lean calls' socket and waits for the calls in
// flight on it to end.
func (a *app) drainLeanCalls() {
	if a.lean != nil {
		a.lean.Drain()
	}
}

// leanCallOptions names the lean call socket to loopback callers of Run.
func (a *app) leanCallOptions() []grpc.ServerOption {
	run := "/" + atollv1.Functions_ServiceDesc.ServiceName + "/Run"
	return []grpc.ServerOption{grpc.ChainStreamInterceptor(
		func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if info.FullMethod == run && a.leanPath != "" && loopbackPeer(ss.Context()) {
				_ = ss.SetHeader(metadata.Pairs(LeanSocketHeader, a.leanPath))
			}
			return handler(srv, ss)
		})}
}

// loopbackPeer says the call came over TCP from this machine: a caller
// elsewhere could not reach the socket.
func loopbackPeer(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	tcp, ok := p.Addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
