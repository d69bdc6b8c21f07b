package workerproto

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns the server's Conn and the agent's end of one in-memory
// stream, closed when the test ends.
func pair(t *testing.T) (*Conn, *AgentConn, net.Conn) {
	t.Helper()
	server, agent := net.Pipe()
	c := NewConn(server)
	t.Cleanup(func() { c.Close(); agent.Close() })
	return c, NewAgentConn(agent, agent), agent
}

func ready(pid int32) *atollv1.WorkerEvent {
	return &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Ready{Ready: &atollv1.WorkerReady{RunnerPid: pid}}}
}

// echo is an agent that answers every call with its arguments, after one
// output event.
func echo(a *AgentConn) error {
	if err := a.Send(ready(7)); err != nil {
		return err
	}
	for {
		call, err := a.ReadCall()
		if err != nil {
			return err
		}
		raw, err := io.ReadAll(a.Payload(call))
		if err != nil {
			return err
		}
		args := raw[call.FunctionSize:]
		out := &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Output{Output: &atollv1.Output{Stream: atollv1.Stream_STREAM_STDOUT, Data: []byte("out")}}}
		if err := a.Send(out); err != nil {
			return err
		}
		if err := a.SendValue(int64(len(args)), func(w io.Writer) error { _, err := w.Write(args); return err }); err != nil {
			return err
		}
	}
}

func TestCallsRoundTrip(t *testing.T) {
	c, a, _ := pair(t)
	done := make(chan error, 1)
	go func() { done <- echo(a) }()
	ctx := context.Background()
	r, err := c.AwaitReady(ctx, func(*atollv1.Output) { t.Error("output before ready") })
	if err != nil || r.RunnerPID != 7 {
		t.Fatalf("AwaitReady = %+v, %v", r, err)
	}
	big := bytes.Repeat([]byte("x"), 3*eagerBytes+5) // grows past the eager allocation
	for _, args := range [][]byte{[]byte("small"), big, {}} {
		var outputs int
		res, err := c.Call(ctx, []byte("fn"), args, func(*atollv1.Output) { outputs++ })
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(res.GetValue(), args) || outputs != 1 {
			t.Fatalf("value of %d bytes after %d outputs, want %d bytes after 1", len(res.GetValue()), outputs, len(args))
		}
	}
	c.Close()
	if err := <-done; !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("agent ended with %v, want the end of the stream", err)
	}
}

func TestAgentFailureAndClosedStream(t *testing.T) {
	c, a, agent := pair(t)
	go func() {
		_ = a.Send(ready(1))
		if _, err := a.ReadCall(); err != nil {
			return
		}
		_ = a.Send(&atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Failure{Failure: &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_WORKER_CRASHED, ExitCode: 3}}})
		agent.Close()
	}()
	ctx := context.Background()
	if _, err := c.AwaitReady(ctx, func(*atollv1.Output) {}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Call(ctx, []byte("fn"), []byte("args"), func(*atollv1.Output) {})
	var fe *FailureError
	if !errors.As(err, &fe) || fe.Failure.GetExitCode() != 3 {
		t.Fatalf("Call = %v, want the agent's failure", err)
	}
	if _, err := c.Call(ctx, []byte("fn"), nil, func(*atollv1.Output) {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call on an ended stream = %v, want ErrClosed", err)
	}
}

// rawFrame is a length prefix claiming n bytes, followed by body.
func rawFrame(n uint64, body []byte) []byte {
	return append(binary.AppendUvarint(nil, n), body...)
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := protodelim.MarshalTo(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The agent is hostile: a length past a bound, or bytes that never come,
// is a protocol violation, and none of them costs the memory it claims.
func TestHostileAgentIsAProtocolViolation(t *testing.T) {
	value := func(size uint64) []byte {
		return marshal(t, &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Value{Value: &atollv1.WorkerValue{Size: size}}})
	}
	tests := []struct {
		name   string
		stream []byte
	}{
		{"event past its bound", rawFrame(MaxEventBytes+1, nil)},
		{"event that never comes", rawFrame(1<<30, []byte("short"))},
		{"value past its bound", value(MaxPayloadBytes + 1)},
		{"value that never comes", append(value(1<<30), "short"...)},
		{"garbage message", rawFrame(3, []byte{0xff, 0xff, 0xff})},
		{"length that never ends", bytes.Repeat([]byte{0xff}, 11)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			server, agent := net.Pipe()
			c := NewConn(server)
			defer c.Close()
			go func() {
				agent.Write(tt.stream)
				agent.Close()
			}()
			_, err := c.AwaitReady(context.Background(), func(*atollv1.Output) {})
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("AwaitReady = %v, want ErrProtocol", err)
			}
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
				t.Errorf("reading the hostile stream allocated %d MiB", grew>>20)
			}
		})
	}
}

func TestHostileServerCallIsRefused(t *testing.T) {
	tests := []struct {
		name   string
		stream []byte
	}{
		{"header past its bound", rawFrame(MaxCallHeaderBytes+1, nil)},
		{"sizes past the bound", marshal(t, &atollv1.WorkerCall{FunctionSize: MaxPayloadBytes, ArgumentsSize: 1})},
		{"sizes that overflow", marshal(t, &atollv1.WorkerCall{FunctionSize: 1 << 63, ArgumentsSize: 1 << 63})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAgentConn(bytes.NewReader(tt.stream), io.Discard)
			if _, err := a.ReadCall(); !errors.Is(err, ErrProtocol) {
				t.Fatalf("ReadCall = %v, want ErrProtocol", err)
			}
		})
	}
}

func TestEventsOutOfPlaceAreViolations(t *testing.T) {
	c, a, _ := pair(t)
	go func() {
		_ = a.SendValue(1, func(w io.Writer) error { _, err := w.Write([]byte("v")); return err })
	}()
	if _, err := c.AwaitReady(context.Background(), func(*atollv1.Output) {}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("a value before ready: %v, want ErrProtocol", err)
	}
}

func TestCallEndsWithItsContext(t *testing.T) {
	c, a, _ := pair(t)
	go func() {
		_ = a.Send(ready(1))
		_, _ = a.ReadCall() // and never answer
	}()
	if _, err := c.AwaitReady(context.Background(), func(*atollv1.Output) {}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Call(ctx, []byte("fn"), nil, func(*atollv1.Output) {}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call = %v, want the context's error", err)
	}
}

func listen(t *testing.T) *Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(lis, nil)
	done := make(chan error, 1)
	go func() { done <- l.Serve() }()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v", err)
		}
	})
	return l
}

func TestDialBackHandsTheConnectionToWhoExpectsIt(t *testing.T) {
	l := listen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	expected := l.Expect("secret-1")
	defer expected.Cancel()

	if _, err := Dial(ctx, l.Addr().String(), "wrong"); !errors.Is(err, ErrRefused) {
		t.Fatalf("Dial with a wrong token = %v, want ErrRefused", err)
	}
	agentSide, err := Dial(ctx, l.Addr().String(), "secret-1")
	if err != nil {
		t.Fatal(err)
	}
	defer agentSide.Close()
	serverSide, err := expected.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(serverSide)
	defer c.Close()
	go func() { _ = echo(NewAgentConn(agentSide, agentSide)) }()
	if _, err := c.AwaitReady(ctx, func(*atollv1.Output) {}); err != nil {
		t.Fatal(err)
	}
	res, err := c.Call(ctx, []byte("fn"), []byte("over the dialed connection"), func(*atollv1.Output) {})
	if err != nil || string(res.GetValue()) != "over the dialed connection" {
		t.Fatalf("Call = %v, %v", res, err)
	}
	// A token admits one connection, once.
	if _, err := Dial(ctx, l.Addr().String(), "secret-1"); !errors.Is(err, ErrRefused) {
		t.Fatalf("second Dial with a used token = %v, want ErrRefused", err)
	}
}

func TestHandshakeRefusesWhatIsNotAWorker(t *testing.T) {
	l := listen(t)
	l.Expect("secret")
	tests := []struct {
		name  string
		hello []byte
	}{
		{"not the protocol", []byte("GET / HTTP/1.1\r\n\r\n")},
		{"token past its bound", append([]byte(HandshakeMagic), binary.AppendUvarint(nil, MaxTokenBytes+1)...)},
		{"empty token", append([]byte(HandshakeMagic), 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tt.hello)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, err := io.ReadAll(c)
			if err != nil || len(b) != 0 {
				t.Fatalf("server answered %q, %v; want the connection closed unanswered", b, err)
			}
		})
	}
}

func TestExpectedWaitEndsWithItsContext(t *testing.T) {
	l := listen(t)
	e := l.Expect("never")
	defer e.Cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := e.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want the context's error", err)
	}
}
