package auth_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/atoll-dev/atoll/internal/auth"
)

// BenchmarkVerify measures what authentication adds to every RPC; the warm
// call round trip budget is well under a millisecond.
func BenchmarkVerify(b *testing.B) {
	ctx := context.Background()
	f := newFixture(b)
	id, secret := f.createKey(b, "alice")
	token := f.auth.IssueWorkerToken("alice", "w-1")
	for range 1000 { // a realistic table, not a single row
		f.createKey(b, "alice")
	}
	uncached := auth.New(f.store, auth.WithVerifiedTTL(0))

	for _, bc := range []struct {
		name string
		a    *auth.Authenticator
	}{{"key", f.auth}, {"key-uncached", uncached}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := bc.a.Verify(ctx, id, secret); err != nil {
					b.Fatal(err)
				}
			}
		})
		// As in a gRPC server, where each call runs on a new goroutine
		// whose stack the SQLite engine must first grow.
		b.Run(bc.name+"-fresh-goroutine", func(b *testing.B) {
			errs := make(chan error)
			for b.Loop() {
				go func() {
					_, err := bc.a.Verify(ctx, id, secret)
					errs <- err
				}()
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"-parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := bc.a.Verify(ctx, id, secret); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	b.Run("wrong-secret", func(b *testing.B) {
		for b.Loop() {
			if _, err := f.auth.Verify(ctx, id, "wrong"); err == nil {
				b.Fatal("wrong secret accepted")
			}
		}
	})
	b.Run("worker-token", func(b *testing.B) {
		for b.Loop() {
			if _, err := f.auth.Verify(ctx, "", token); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRoundTrip is a whole unary call over bufconn, with auth skipped,
// by key and by worker token: the difference is the interceptor's cost.
func BenchmarkRoundTrip(b *testing.B) {
	f := newFixture(b)
	conn := serve(b, f.auth)
	id, secret := f.createKey(b, "alice")
	token := f.auth.IssueWorkerToken("alice", "w-1")
	noAuthConn := serve(b, f.auth, "/atoll.test.WhoAmI/Get")
	uncachedConn := serve(b, auth.New(f.store, auth.WithVerifiedTTL(0)))

	for _, bc := range []struct {
		name string
		conn *grpc.ClientConn
		ctx  context.Context
	}{
		{"no-auth", noAuthConn, context.Background()},
		{"key", conn, metadata.AppendToOutgoingContext(context.Background(), auth.MetadataKeyID, id, auth.MetadataKeySecret, secret)},
		{"key-uncached", uncachedConn, metadata.AppendToOutgoingContext(context.Background(), auth.MetadataKeyID, id, auth.MetadataKeySecret, secret)},
		{"worker-token", conn, metadata.AppendToOutgoingContext(context.Background(), auth.MetadataWorkerToken, token)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := callGet(bc.ctx, bc.conn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
