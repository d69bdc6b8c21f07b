package auth_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/atoll-dev/atoll/internal/auth"
)

// whoAmI is a test service that answers with the Principal its handler saw,
// over a unary and a server-streaming method.
var whoAmIDesc = grpc.ServiceDesc{
	ServiceName: "atoll.test.WhoAmI",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Get",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, _ any) (any, error) { return whoAmI(ctx), nil }
			if interceptor == nil {
				return h(ctx, in)
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/atoll.test.WhoAmI/Get"}, h)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Watch",
		ServerStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			if err := stream.RecvMsg(new(emptypb.Empty)); err != nil {
				return err
			}
			return stream.SendMsg(whoAmI(stream.Context()))
		},
	}},
}

func whoAmI(ctx context.Context) *wrapperspb.StringValue {
	p, ok := auth.PrincipalFrom(ctx)
	if !ok {
		return wrapperspb.String("nobody")
	}
	return wrapperspb.String(fmt.Sprintf("account=%s key=%s worker=%s", p.Account, p.KeyID, p.WorkerID))
}

// serve starts a gRPC server over bufconn with a's interceptors, exempting
// the health service's Check and the methods in skip from auth, and returns
// a client connection.
func serve(t testing.TB, a *auth.Authenticator, skip ...string) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	skipOpt := auth.SkipMethods(append(skip, healthpb.Health_Check_FullMethodName)...)
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(a.UnaryServerInterceptor(skipOpt)),
		grpc.StreamInterceptor(a.StreamServerInterceptor(skipOpt)),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	srv.RegisterService(&whoAmIDesc, struct{}{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func callGet(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	out := new(wrapperspb.StringValue)
	err := conn.Invoke(ctx, "/atoll.test.WhoAmI/Get", new(emptypb.Empty), out)
	return out.GetValue(), err
}

func callWatch(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := conn.NewStream(ctx, &whoAmIDesc.Streams[0], "/atoll.test.WhoAmI/Watch")
	if err != nil {
		return "", err
	}
	if err := stream.SendMsg(new(emptypb.Empty)); err != nil {
		return "", err
	}
	if err := stream.CloseSend(); err != nil {
		return "", err
	}
	out := new(wrapperspb.StringValue)
	err = stream.RecvMsg(out)
	return out.GetValue(), err
}

func TestInterceptors(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	conn := serve(t, f.auth)
	id, secret := f.createKey(t, "alice")
	revokedID, revokedSecret := f.createKey(t, "alice")
	if err := f.auth.Revoke(ctx, revokedID); err != nil {
		t.Fatal(err)
	}
	token := f.auth.IssueWorkerToken("bob", "w-1")
	goneToken := f.auth.IssueWorkerToken("bob", "w-2")
	f.auth.RevokeWorkerToken("w-2")

	for _, tc := range []struct {
		name    string
		md      []string
		want    string     // handler's answer when the call is let in
		code    codes.Code // otherwise
		message string     // part of the error message
	}{
		{name: "key", md: []string{auth.MetadataKeyID, id, auth.MetadataKeySecret, secret},
			want: "account=alice key=" + id + " worker="},
		{name: "worker token", md: []string{auth.MetadataWorkerToken, token},
			want: "account=bob key= worker=w-1"},
		{name: "no credentials", code: codes.Unauthenticated, message: "missing API key"},
		{name: "id without secret", md: []string{auth.MetadataKeyID, id},
			code: codes.Unauthenticated, message: "invalid API key"},
		{name: "wrong secret", md: []string{auth.MetadataKeyID, id, auth.MetadataKeySecret, "wrong"},
			code: codes.Unauthenticated, message: "invalid API key"},
		{name: "revoked key", md: []string{auth.MetadataKeyID, revokedID, auth.MetadataKeySecret, revokedSecret},
			code: codes.Unauthenticated, message: "create one with `atoll keys create`"},
		{name: "token of a stopped worker", md: []string{auth.MetadataWorkerToken, goneToken},
			code: codes.Unauthenticated, message: "invalid worker token"},
		{name: "key and token", md: []string{auth.MetadataKeyID, id, auth.MetadataKeySecret, secret, auth.MetadataWorkerToken, token},
			code: codes.Unauthenticated, message: "not both"},
	} {
		for _, call := range []struct {
			kind string
			do   func(context.Context, *grpc.ClientConn) (string, error)
		}{{"unary", callGet}, {"stream", callWatch}} {
			t.Run(tc.name+"/"+call.kind, func(t *testing.T) {
				got, err := call.do(metadata.AppendToOutgoingContext(ctx, tc.md...), conn)
				if tc.code == codes.OK {
					if err != nil {
						t.Fatalf("call: %v", err)
					}
					if got != tc.want {
						t.Errorf("handler saw %q, want %q", got, tc.want)
					}
					return
				}
				st, _ := status.FromError(err)
				if st.Code() != tc.code || !strings.Contains(st.Message(), tc.message) {
					t.Errorf("call = %q, %v; want %v containing %q", got, err, tc.code, tc.message)
				}
			})
		}
	}
}

func TestInterceptorsSkipMethods(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	conn := serve(t, f.auth)
	client := healthpb.NewHealthClient(conn)

	// Check is exempt: it answers without credentials.
	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Check without credentials = %v, %v; want SERVING", resp, err)
	}
	// Watch, on the same service, is not.
	watch := func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	if err := watch(ctx); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Watch without credentials = %v, want Unauthenticated", err)
	}
	id, secret := f.createKey(t, "alice")
	if err := watch(metadata.AppendToOutgoingContext(ctx, auth.MetadataKeyID, id, auth.MetadataKeySecret, secret)); err != nil {
		t.Errorf("Watch with a key = %v, want OK", err)
	}
}

func TestInterceptorStoreFailureIsInternal(t *testing.T) {
	conn := serve(t, auth.New(failingStore{}))
	id, secret := auth.NewKey()
	_, err := callGet(metadata.AppendToOutgoingContext(context.Background(), auth.MetadataKeyID, id, auth.MetadataKeySecret, secret), conn)
	st, _ := status.FromError(err)
	if st.Code() != codes.Internal || strings.Contains(st.Message(), errDiskOnFire.Error()) {
		t.Errorf("call = %v; want Internal without the internal detail", err)
	}
	if errors.Is(err, auth.ErrUnauthenticated) {
		t.Error("a store failure reads as a credential failure")
	}
}

func TestPrincipalFromBareContext(t *testing.T) {
	if p, ok := auth.PrincipalFrom(context.Background()); ok {
		t.Errorf("PrincipalFrom(background) = %+v, true; want false", p)
	}
	want := auth.Principal{Account: "alice", KeyID: "ak_x"}
	if got, ok := auth.PrincipalFrom(auth.NewContext(context.Background(), want)); !ok || got != want {
		t.Errorf("PrincipalFrom(NewContext(p)) = %+v, %v", got, ok)
	}
}

// TestTapHandleAuthenticatesBeforeTheMessage checks that a server with the
// tap refuses a caller without credentials before its message is read, puts
// the Principal where handlers find it, and keeps worker tokens to their
// scope, as the interceptors do.
func TestTapHandleAuthenticatesBeforeTheMessage(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	id, secret := f.createKey(t, "alice")
	token := f.auth.IssueWorkerToken("bob", "w-1")
	var trusted atomic.Int32
	opts := []auth.InterceptorOption{
		auth.SkipMethods(healthpb.Health_Check_FullMethodName),
		auth.WorkerTokenScope("/atoll.test.WhoAmI/Watch"),
		auth.OnAuthenticated(func(context.Context) { trusted.Add(1) }),
	}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(
		grpc.InTapHandle(f.auth.TapHandle(opts...)),
		grpc.UnaryInterceptor(f.auth.UnaryServerInterceptor(opts...)),
		grpc.StreamInterceptor(f.auth.StreamServerInterceptor(opts...)),
		// A message this size would be refused by gRPC if it were read.
		grpc.MaxRecvMsgSize(1<<10),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	srv.RegisterService(&whoAmIDesc, struct{}{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	big := wrapperspb.Bytes(make([]byte, 1<<20))
	err = conn.Invoke(ctx, "/atoll.test.WhoAmI/Get", big, new(wrapperspb.StringValue))
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a large request without credentials: %v, want Unauthenticated before the size is seen", err)
	}
	if trusted.Load() != 0 {
		t.Fatalf("OnAuthenticated called for a refused call")
	}

	keyCtx := metadata.AppendToOutgoingContext(ctx, auth.MetadataKeyID, id, auth.MetadataKeySecret, secret)
	if got, err := callGet(keyCtx, conn); err != nil || got != "account=alice key="+id+" worker=" {
		t.Fatalf("with a key: %q, %v", got, err)
	}
	tokenCtx := metadata.AppendToOutgoingContext(ctx, auth.MetadataWorkerToken, token)
	if got, err := callWatch(tokenCtx, conn); err != nil || got != "account=bob key= worker=w-1" {
		t.Fatalf("worker token inside its scope: %q, %v", got, err)
	}
	_, err = callGet(tokenCtx, conn)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "worker token") {
		t.Fatalf("worker token outside its scope: %v, want PermissionDenied naming the token", err)
	}
	if n := trusted.Load(); n != 2 {
		t.Fatalf("OnAuthenticated called %d times, want once per authenticated call (2)", n)
	}
}
