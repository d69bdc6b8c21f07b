package auth

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
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
	// workerScope, when set, lists the method prefixes a worker token may
	// call; nil lets it call everything.
	workerScope []string
	// onAuthenticated is told of every call that authenticated.
	onAuthenticated func(ctx context.Context)
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

// WorkerTokenScope limits worker tokens to methods whose full name starts
// with one of prefixes ("/atoll.v1.Functions/"); a worker token calling
// anything else is refused with codes.PermissionDenied. A worker needs only
// to run functions for its nested calls (its /data it reaches through its
// mount), so nothing a function does with its token can read the account's
// history or manage it.
func WorkerTokenScope(prefixes ...string) InterceptorOption {
	return func(c *interceptorConfig) {
		c.workerScope = append(c.workerScope, prefixes...)
	}
}

// OnAuthenticated has f called with the context of every call that
// authenticated, before its message is read: the API edge uses it to stop
// holding the connection to the bounds of a peer that has not.
func OnAuthenticated(f func(ctx context.Context)) InterceptorOption {
	return func(c *interceptorConfig) { c.onAuthenticated = f }
}

func (c *interceptorConfig) workerMayCall(method string) bool {
	if c.workerScope == nil {
		return true
	}
	for _, p := range c.workerScope {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
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
		if _, done := PrincipalFrom(ctx); done || cfg.skip[info.FullMethod] {
			return handler(ctx, req)
		}
		ctx, err := a.authenticate(ctx, info.FullMethod, cfg)
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
		if _, done := PrincipalFrom(ss.Context()); done || cfg.skip[info.FullMethod] {
			return handler(srv, ss)
		}
		ctx, err := a.authenticate(ss.Context(), info.FullMethod, cfg)
		if err != nil {
			return err
		}
		return handler(srv, &principalStream{ServerStream: ss, ctx: ctx})
	}
}

// TapHandle authenticates every call from its headers as the interceptors
// do, but when the call arrives, before gRPC reads a byte of its message:
// a peer without credentials is refused without the server holding its
// request, whatever size it claims (gRPC reads a unary request whole before
// any interceptor runs). The Principal goes into the call's context, where
// the interceptors find it and do not authenticate again.
//
// It runs on the connection's reading goroutine, so it does only what
// authentication costs: a hash, and a database lookup for a key not seen
// within the verified TTL.
func (a *Authenticator) TapHandle(opts ...InterceptorOption) tap.ServerInHandle {
	cfg := newInterceptorConfig(opts)
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if cfg.skip[info.FullMethodName] {
			return ctx, nil
		}
		return a.authenticate(ctx, info.FullMethodName, cfg)
	}
}

// principalStream is a ServerStream whose context carries the Principal.
type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *principalStream) Context() context.Context { return s.ctx }

// authenticate returns ctx with the caller's Principal, or a status error.
func (a *Authenticator) authenticate(ctx context.Context, method string, cfg *interceptorConfig) (context.Context, error) {
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
	case err == nil && p.WorkerID != "" && !cfg.workerMayCall(method):
		a.log.Info("call refused", "method", method, "worker", p.WorkerID, "reason", "outside the worker token's scope")
		return nil, status.Error(codes.PermissionDenied, errWorkerTokenScope.Error())
	case err == nil:
		if cfg.onAuthenticated != nil {
			cfg.onAuthenticated(ctx)
		}
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
