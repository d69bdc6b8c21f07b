package fastcall_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/fastcall"
	"github.com/atoll-dev/atoll/internal/server"
)

// keys is a Verifier of one good key per account; revoked keys fail.
type keys struct {
	mu      sync.Mutex
	secrets map[string]string // id -> secret
	account map[string]string // id -> account
}

func (k *keys) Verify(_ context.Context, id, secret string) (auth.Principal, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s, ok := k.secrets[id]; ok && id != "" && s == secret {
		return auth.Principal{Account: k.account[id], KeyID: id}, nil
	}
	return auth.Principal{}, errors.Join(auth.ErrUnauthenticated, errors.New("invalid API key"))
}

func (k *keys) revoke(id string) {
	k.mu.Lock()
	delete(k.secrets, id)
	k.mu.Unlock()
}

type fixture struct {
	path  string
	keys  *keys
	guard *server.ConnGuard
	srv   *fastcall.Server
}

// echo answers a call with its function name and the caller's account;
// function "wait" runs until cancelled.
func echo(req *atollv1.RunRequest, stream grpc.ServerStreamingServer[atollv1.RunEvent]) error {
	ctx := stream.Context()
	p, _ := auth.PrincipalFrom(ctx)
	if req.GetFunctionName() == "wait" {
		<-ctx.Done()
		return ctx.Err()
	}
	return stream.Send(&atollv1.RunEvent{Event: &atollv1.RunEvent_Result{Result: &atollv1.Result{
		Outcome: &atollv1.Result_Value{Value: []byte(req.GetFunctionName() + "@" + p.Account)}}}})
}

func newFixture(t *testing.T, opts fastcall.Options) *fixture {
	t.Helper()
	f := &fixture{
		path: filepath.Join(t.TempDir(), "calls.sock"),
		keys: &keys{secrets: map[string]string{"ak_a": "sa", "ak_b": "sb"}, account: map[string]string{"ak_a": "alice", "ak_b": "bob"}},
	}
	f.guard = server.NewConnGuard(server.ConnGuardOptions{MaxUnauthenticated: 2})
	opts.Verifier, opts.Validate, opts.Guard = f.keys, server.ValidateRequest, f.guard
	if opts.Run == nil {
		opts.Run = echo
	}
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = 1 << 10
	}
	f.srv = fastcall.New(opts)
	lis, err := fastcall.Listen(f.path)
	if err != nil {
		t.Fatal(err)
	}
	go f.srv.Serve(lis)
	t.Cleanup(f.srv.Close)
	return f
}

type client struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (f *fixture) dial(t *testing.T) *client {
	t.Helper()
	nc, err := net.Dial("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *client) send(kind byte, payload []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(fastcall.AppendFrame(nil, kind, payload)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) hello(id, secret string) {
	c.t.Helper()
	b, _ := json.Marshal(map[string]any{"version": 1, "metadata": map[string]string{auth.MetadataKeyID: id, auth.MetadataKeySecret: secret}})
	c.send(fastcall.FrameHello, b)
}

func (c *client) read() (byte, []byte) {
	c.t.Helper()
	kind, payload, err := fastcall.ReadFrame(c.br, fastcall.Limits{fastcall.FrameReady: 256, fastcall.FrameEvent: 1 << 20,
		fastcall.FrameEnd: 1 << 20, fastcall.FramePong: 0})
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	return kind, payload
}

// end reads frames up to the End and returns its code and message.
func (c *client) end() (codes.Code, string, [][]byte) {
	c.t.Helper()
	var values [][]byte
	for {
		kind, payload := c.read()
		switch kind {
		case fastcall.FrameEvent:
			ev := new(atollv1.RunEvent)
			if err := proto.Unmarshal(payload, ev); err != nil {
				c.t.Fatal(err)
			}
			values = append(values, ev.GetResult().GetValue())
		case fastcall.FrameEnd:
			return codes.Code(payload[0]), string(payload[1:]), values
		}
	}
}

func (c *client) closed() bool {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.br.ReadByte()
	return err != nil
}

func (c *client) run(name string) {
	c.t.Helper()
	b, err := proto.Marshal(&atollv1.RunRequest{FunctionName: name, Function: []byte("f"),
		Environment: &atollv1.Environment{PythonVersion: "3.11"}})
	if err != nil {
		c.t.Fatal(err)
	}
	c.send(fastcall.FrameRun, b)
}

// served checks that a fresh, well-behaved connection is still served.
func (f *fixture) served(t *testing.T) {
	t.Helper()
	c := f.dial(t)
	c.hello("ak_a", "sa")
	if kind, _ := c.read(); kind != fastcall.FrameReady {
		t.Fatalf("hello answered with %q; want Ready", kind)
	}
	c.run("f")
	if code, msg, values := c.end(); code != codes.OK || len(values) != 1 || string(values[0]) != "f@alice" {
		t.Fatalf("call = %v %q %q; want OK with f@alice", code, msg, values)
	}
}

func TestCallsOnOneConnection(t *testing.T) {
	f := newFixture(t, fastcall.Options{})
	c := f.dial(t)
	c.hello("ak_b", "sb")
	if kind, _ := c.read(); kind != fastcall.FrameReady {
		t.Fatalf("hello answered with %q; want Ready", kind)
	}
	for _, name := range []string{"one", "two"} {
		c.run(name)
		if code, msg, values := c.end(); code != codes.OK || len(values) != 1 || string(values[0]) != name+"@bob" {
			t.Fatalf("call %s = %v %q %q; want OK with the key's account", name, code, msg, values)
		}
	}
	c.send(fastcall.FramePing, nil)
	if kind, _ := c.read(); kind != fastcall.FramePong {
		t.Fatalf("ping answered with %q; want Pong", kind)
	}
}

func TestCancelFrame(t *testing.T) {
	f := newFixture(t, fastcall.Options{})
	c := f.dial(t)
	c.hello("ak_a", "sa")
	c.read()
	c.run("wait")
	// A ping is answered while the call runs.
	c.send(fastcall.FramePing, nil)
	if kind, _ := c.read(); kind != fastcall.FramePong {
		t.Fatalf("ping during a call answered with %q; want Pong", kind)
	}
	c.send(fastcall.FrameCancel, nil)
	if code, _, _ := c.end(); code != codes.Canceled {
		t.Fatalf("cancelled call ended %v; want Canceled", code)
	}
	c.run("after")
	if code, _, values := c.end(); code != codes.OK || string(values[0]) != "after@alice" {
		t.Fatalf("call after a cancel = %v %q; want OK", code, values)
	}
}

// TestAttacks performs each attack on a real socket, checks it fails with a
// clear error, and that the server goes on serving.
func TestAttacks(t *testing.T) {
	f := newFixture(t, fastcall.Options{HandshakeTimeout: 300 * time.Millisecond})
	t.Run("wrong key", func(t *testing.T) {
		c := f.dial(t)
		c.hello("ak_a", "wrong")
		if code, msg, _ := c.end(); code != codes.Unauthenticated || msg == "" {
			t.Fatalf("wrong key: %v %q; want Unauthenticated", code, msg)
		}
		if !c.closed() {
			t.Fatal("the connection stayed open after a wrong key")
		}
	})
	t.Run("garbage before auth", func(t *testing.T) {
		c := f.dial(t)
		if _, err := c.nc.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if code, _, _ := c.end(); code != codes.InvalidArgument {
			t.Fatalf("garbage: %v; want InvalidArgument", code)
		}
		if !c.closed() {
			t.Fatal("the connection stayed open after garbage")
		}
	})
	t.Run("call before auth", func(t *testing.T) {
		c := f.dial(t)
		c.run("f")
		if code, _, _ := c.end(); code != codes.InvalidArgument {
			t.Fatalf("a call before the hello: %v; want InvalidArgument", code)
		}
	})
	t.Run("oversized hello", func(t *testing.T) {
		c := f.dial(t)
		c.nc.Write(fastcall.AppendHeader(nil, fastcall.FrameHello, 1<<31))
		if code, _, _ := c.end(); code != codes.ResourceExhausted {
			t.Fatalf("oversized hello: %v; want ResourceExhausted", code)
		}
	})
	t.Run("oversized run", func(t *testing.T) {
		c := f.dial(t)
		c.hello("ak_a", "sa")
		c.read()
		c.nc.Write(fastcall.AppendHeader(nil, fastcall.FrameRun, 1<<30))
		if code, msg, _ := c.end(); code != codes.ResourceExhausted {
			t.Fatalf("oversized run: %v %q; want ResourceExhausted", code, msg)
		}
		if !c.closed() {
			t.Fatal("the connection stayed open after an oversized frame")
		}
	})
	t.Run("undecodable run", func(t *testing.T) {
		c := f.dial(t)
		c.hello("ak_a", "sa")
		c.read()
		c.send(fastcall.FrameRun, []byte{0xff, 0xff, 0xff})
		if code, _, _ := c.end(); code != codes.InvalidArgument {
			t.Fatalf("undecodable request: %v; want InvalidArgument", code)
		}
	})
	t.Run("field out of bounds", func(t *testing.T) {
		c := f.dial(t)
		c.hello("ak_a", "sa")
		c.read()
		b, _ := proto.Marshal(&atollv1.RunRequest{FunctionName: "f", Function: []byte("f"), MachineType: string(make([]byte, 100))})
		c.send(fastcall.FrameRun, b)
		if code, msg, _ := c.end(); code != codes.InvalidArgument || msg == "" {
			t.Fatalf("machine_type of 100 bytes: %v %q; want InvalidArgument naming it", code, msg)
		}
	})
	t.Run("silent peer", func(t *testing.T) {
		c := f.dial(t)
		if !c.closed() {
			t.Fatal("a peer that never said hello was kept past the handshake timeout")
		}
	})
	t.Run("flood of unauthenticated connections", func(t *testing.T) {
		var conns []*client
		for range 4 {
			conns = append(conns, f.dial(t))
		}
		time.Sleep(100 * time.Millisecond)
		if n := f.guard.Untrusted(); n > 2 {
			t.Fatalf("%d unauthenticated connections held; the guard allows 2", n)
		}
		if !conns[0].closed() {
			t.Fatal("the oldest unauthenticated connection was not closed for new ones")
		}
	})
	t.Run("revoked key on an open connection", func(t *testing.T) {
		f := newFixture(t, fastcall.Options{})
		c := f.dial(t)
		c.hello("ak_b", "sb")
		c.read()
		f.keys.revoke("ak_b")
		c.run("f")
		if code, _, values := c.end(); code != codes.Unauthenticated || len(values) != 0 {
			t.Fatalf("a call with a revoked key: %v %q; want Unauthenticated and no result", code, values)
		}
	})
	f.served(t)
}

func TestShutdownRefusesNewCalls(t *testing.T) {
	f := newFixture(t, fastcall.Options{})
	busy := f.dial(t)
	busy.hello("ak_a", "sa")
	busy.read()
	busy.run("wait")
	idle := f.dial(t)
	idle.hello("ak_a", "sa")
	idle.read()
	time.Sleep(50 * time.Millisecond)
	f.srv.Shutdown()
	if !idle.closed() {
		t.Fatal("an idle connection stayed open after Shutdown")
	}
	if _, err := net.Dial("unix", f.path); err == nil {
		t.Fatal("the socket accepted a connection after Shutdown")
	}
	busy.send(fastcall.FrameCancel, nil)
	if code, _, _ := busy.end(); code != codes.Canceled {
		t.Fatalf("the call in flight ended %v; want Canceled", code)
	}
	if !busy.closed() {
		t.Fatal("the connection stayed open after its call, past Shutdown")
	}
}
