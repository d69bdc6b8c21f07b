package auth

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Request metadata carrying credentials. gRPC metadata keys are lowercase.
const (
	MetadataKeyID       = "x-atoll-key-id"
	MetadataKeySecret   = "x-atoll-key-secret"
	MetadataWorkerToken = "x-atoll-worker-token"
)

type principalKey struct{}

// NewContext returns ctx carrying p, as the interceptors do. Tests of
// services use it to call handlers directly.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller the interceptors authenticated. It is
// false for a method exempted with SkipMethods, or a context that never went
// through an interceptor.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// InterceptorOption configures the interceptors.
type InterceptorOption func(*interceptorConfig)

type interceptorConfig struct {
	skip map[string]bool
}

// SkipMethods exempts methods, by full name ("/grpc.health.v1.Health/Check"),
// from authentication. Their handlers get no Principal.
func SkipMethods(fullMethods ...string) InterceptorOption {
	return func(c *interceptorConfig) {
		for _, m := range fullMethods {
			c.skip[m] = true
		}
	}
}

func newInterceptorConfig(opts []InterceptorOption) *interceptorConfig {
	c := &interceptorConfig{skip: make(map[string]bool)}
	for _, o := range opts {
		o(c)
	}
	return c
}

// UnaryServerInterceptor authenticates every unary call from its metadata
// (MetadataKeyID and MetadataKeySecret, or MetadataWorkerToken) and puts the
// Principal in the handler's context. A rejected call ends with
// codes.Unauthenticated and a message safe to show.
func (a *Authenticator) UnaryServerInterceptor(opts ...InterceptorOption) grpc.UnaryServerInterceptor {
	cfg := newInterceptorConfig(opts)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if cfg.skip[info.FullMethod] {
			return handler(ctx, req)
		}
		ctx, err := a.authenticate(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streaming calls.
func (a *Authenticator) StreamServerInterceptor(opts ...InterceptorOption) grpc.StreamServerInterceptor {
	cfg := newInterceptorConfig(opts)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if cfg.skip[info.FullMethod] {
			return handler(srv, ss)
		}
		ctx, err := a.authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &principalStream{ServerStream: ss, ctx: ctx})
	}
}

// principalStream is a ServerStream whose context carries the Principal.
type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *principalStream) Context() context.Context { return s.ctx }

// authenticate returns ctx with the caller's Principal, or a status error.
func (a *Authenticator) authenticate(ctx context.Context, method string) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	id, secret, token := first(md, MetadataKeyID), first(md, MetadataKeySecret), first(md, MetadataWorkerToken)

	var p Principal
	var err error
	switch {
	case token != "" && (id != "" || secret != ""):
		err = errAmbiguousCredentials
	case token != "":
		p, err = a.workers.verify(token)
	case id == "" && secret == "":
		err = errMissingCredentials
	default:
		p, err = a.verifyKey(ctx, id, secret)
	}
	switch {
	case err == nil:
		return NewContext(ctx, p), nil
	case errors.Is(err, ErrUnauthenticated):
		a.log.Info("call rejected", "method", method, "key", clip(id), "worker_token", token != "", "reason", err)
		return nil, status.Error(codes.Unauthenticated, err.Error())
	case ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err()
	default:
		a.log.Error("authentication failed", "method", method, "key", clip(id), "err", err)
		return nil, status.Error(codes.Internal, "authentication failed: internal server error")
	}
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
