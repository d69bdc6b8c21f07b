package serverapp

import (
	"context"
	"runtime/debug"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/stats"
)

// largeRPCBytes is the payload an RPC must carry (both ways together) for
// the server to give memory back to the system after it: a 200 MB argument
// and its result leave hundreds of MB of heap that Go's scavenger would
// otherwise return only over minutes, if at all, while the server idles.
const largeRPCBytes = 32 << 20

// releaseDelay lets the buffers of the RPC that just ended (and of others
// ending with it) become garbage before the collection.
const releaseDelay = 50 * time.Millisecond

// memoryReleaser is a gRPC stats handler that counts each RPC's payload
// bytes and, after a large one, runs a collection that returns the freed
// memory to the system (debug.FreeOSMemory), once for a burst of them.
type memoryReleaser struct {
	kick chan struct{}
}

func newMemoryReleaser() *memoryReleaser {
	return &memoryReleaser{kick: make(chan struct{}, 1)}
}

type rpcBytesKey struct{}

func (m *memoryReleaser) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, rpcBytesKey{}, new(atomic.Int64))
}

func (m *memoryReleaser) HandleRPC(ctx context.Context, s stats.RPCStats) {
	n, _ := ctx.Value(rpcBytesKey{}).(*atomic.Int64)
	if n == nil {
		return
	}
	switch s := s.(type) {
	case *stats.InPayload:
		n.Add(int64(s.Length))
	case *stats.OutPayload:
		n.Add(int64(s.Length))
	case *stats.End:
		if n.Load() >= largeRPCBytes {
			select {
			case m.kick <- struct{}{}:
			default: // one is due already
			}
		}
	}
}

func (m *memoryReleaser) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (m *memoryReleaser) HandleConn(context.Context, stats.ConnStats) {}

// run returns memory after large RPCs until ctx ends.
func (m *memoryReleaser) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(releaseDelay):
		}
		debug.FreeOSMemory()
	}
}

// startMemoryReleaser makes the stats handler registerServices installs,
// and runs it until the server stops.
func (a *app) startMemoryReleaser(ctx context.Context) error {
	a.memory = newMemoryReleaser()
	ctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { a.memory.run(ctx); close(done) }()
	a.undo = append(a.undo, func() { stop(); <-done })
	return nil
}
