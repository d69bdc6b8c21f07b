package server

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/state"
)

// countingStats has the shape of the server's memory releaser: a stats
// handler that counts each RPC's payload bytes.
type countingStats struct{}

type countKey struct{}

func (countingStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, countKey{}, new(atomic.Int64))
}

func (countingStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	n, _ := ctx.Value(countKey{}).(*atomic.Int64)
	switch s := s.(type) {
	case *stats.InPayload:
		n.Add(int64(s.Length))
	case *stats.OutPayload:
		n.Add(int64(s.Length))
	}
}

func (countingStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (countingStats) HandleConn(context.Context, stats.ConnStats)                       {}

// BenchmarkWarmRunEdge is one warm call through real gRPC over loopback
// TCP, with the edge's layers added one at a time: what each costs a call
// (compare with BenchmarkWarmRun, the handler alone).
func BenchmarkWarmRunEdge(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := state.Open(ctx, filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	authn := auth.New(store)
	keyID, secret, err := authn.CreateKey(ctx, "alice", "bench")
	if err != nil {
		b.Fatal(err)
	}
	history := NewHistory(store, 0, nil)
	historyDone := make(chan struct{})
	hctx, hcancel := context.WithCancel(ctx)
	go func() { history.Run(hctx); close(historyDone) }()
	defer func() { hcancel(); <-historyDone }()

	codec := RequestCodec()
	validateUnary, validateStream := codec.ValidateRequests()
	withAuth := func(o []grpc.ServerOption) []grpc.ServerOption {
		return append(o, grpc.InTapHandle(authn.TapHandle()),
			grpc.ChainUnaryInterceptor(validateUnary, authn.UnaryServerInterceptor()),
			grpc.ChainStreamInterceptor(validateStream, authn.StreamServerInterceptor()))
	}
	withCodec := func(o []grpc.ServerOption) []grpc.ServerOption { return append(o, grpc.ForceServerCodecV2(codec)) }
	withStats := func(o []grpc.ServerOption) []grpc.ServerOption { return append(o, grpc.StatsHandler(countingStats{})) }
	bareAuth := func(o []grpc.ServerOption) []grpc.ServerOption {
		// Without the edge's auth the handler still needs a caller.
		return append(o, grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, &principalOnly{ServerStream: ss, ctx: auth.NewContext(ss.Context(), auth.Principal{Account: "alice"})})
		}))
	}
	for _, tt := range []struct {
		name   string
		layers []func([]grpc.ServerOption) []grpc.ServerOption
	}{
		{"bare", []func([]grpc.ServerOption) []grpc.ServerOption{bareAuth}},
		{"codec", []func([]grpc.ServerOption) []grpc.ServerOption{bareAuth, withCodec}},
		{"codec+auth", []func([]grpc.ServerOption) []grpc.ServerOption{withAuth, withCodec}},
		{"codec+auth+stats", []func([]grpc.ServerOption) []grpc.ServerOption{withAuth, withCodec, withStats}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			var opts []grpc.ServerOption
			for _, l := range tt.layers {
				opts = l(opts)
			}
			sched := scheduler.New(scheduler.Options{Launcher: pipeLauncher{}})
			defer sched.Shutdown(context.Background())
			gs := grpc.NewServer(opts...)
			NewFunctions(Options{Catalog: machine.Defaults(), Environments: namedEnvironments{}, Scheduler: sched, History: history}).Register(gs)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go gs.Serve(lis)
			defer gs.Stop()
			cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			client := atollv1.NewFunctionsClient(cc)
			cctx := metadata.AppendToOutgoingContext(ctx, auth.MetadataKeyID, keyID, auth.MetadataKeySecret, secret)
			req := &atollv1.RunRequest{
				Function: make([]byte, 2000), Arguments: []byte("x"), FunctionName: "f", MachineType: "XS", KeepAliveSeconds: 300,
				Environment: &atollv1.Environment{PythonVersion: "3.11"},
			}
			b.ReportAllocs()
			var before, after syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			defer func() {
				_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
				used := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
				b.ReportMetric(float64(used.Microseconds())/float64(b.N), "cpu-µs/op")
			}()
			for b.Loop() {
				stream, err := client.Run(cctx, req)
				if err != nil {
					b.Fatal(err)
				}
				var result *atollv1.Result
				for {
					ev, err := stream.Recv()
					if err != nil {
						break
					}
					if r := ev.GetResult(); r != nil {
						result = r
					}
				}
				if string(result.GetValue()) != "x" {
					b.Fatalf("got %v; want the result", result)
				}
			}
		})
	}
}

type principalOnly struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *principalOnly) Context() context.Context { return s.ctx }
