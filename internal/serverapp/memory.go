package serverapp

import (
	"context"
	"log/slog"
	"runtime"
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

// releaseDelays are when, after the last of a run of large RPCs ended,
// memory is given back: its handler has returned, but the transport may
// still hold the reply until a slow caller has read it, so once soon and
// once later. Another large RPC ending starts the wait over: memory given
// back between large calls would only be faulted in again by the next
// (a third of the server's time on back-to-back 100 MB calls).
var releaseDelays = [...]time.Duration{2 * time.Second, 5 * time.Second}

// memoryReleaser is a gRPC stats handler that counts each RPC's payload
// bytes and, after a large one, runs a collection that returns the freed
// memory to the system (debug.FreeOSMemory), once for a burst of them.
type memoryReleaser struct {
	kick chan struct{}
	log  *slog.Logger
}

func newMemoryReleaser(log *slog.Logger) *memoryReleaser {
	return &memoryReleaser{kick: make(chan struct{}, 1), log: log}
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
		m.afterCall(n.Load())
	}
}

// afterCall gives memory back after a call that moved bytes both ways
// together, if that is large: a gRPC one (HandleRPC) or a lean one.
func (m *memoryReleaser) afterCall(bytes int64) {
	if bytes >= largeRPCBytes {
		select {
		case m.kick <- struct{}{}:
		default: // one is due already
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
		var waited time.Duration
		for i := 0; i < len(releaseDelays); {
			select {
			case <-ctx.Done():
				return
			case <-m.kick:
				i, waited = 0, 0
				continue
			case <-time.After(releaseDelays[i] - waited):
			}
			waited = releaseDelays[i]
			m.release(ctx)
			i++
		}
	}
}

func (m *memoryReleaser) release(ctx context.Context) {
	// Twice: buffers pooled in a sync.Pool (gRPC's among them) survive
	// one collection in its victim cache.
	debug.FreeOSMemory()
	debug.FreeOSMemory()
	if m.log.Enabled(ctx, slog.LevelDebug) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		m.log.Debug("returned memory to the system after a large call",
			"heap_in_use_mib", ms.HeapInuse>>20, "released_mib", ms.HeapReleased>>20, "sys_mib", ms.Sys>>20)
	}
}

// startMemoryReleaser makes the stats handler registerServices installs,
// and runs it until the server stops.
func (a *app) startMemoryReleaser(ctx context.Context) error {
	a.memory = newMemoryReleaser(a.log.With("component", "memory"))
	ctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { a.memory.run(ctx); close(done) }()
	a.undo = append(a.undo, func() { stop(); <-done })
	return nil
}
