package workerproto

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
)

// frames is the delimited encoding of ms, as an agent writes them.
func frames(f *testing.F, ms ...proto.Message) []byte {
	f.Helper()
	var buf bytes.Buffer
	for _, m := range ms {
		if _, err := protodelim.MarshalTo(&buf, m); err != nil {
			f.Fatal(err)
		}
	}
	return buf.Bytes()
}

// FuzzServerReadsEvents plays a hostile agent: whatever bytes it writes,
// the server's end never panics, never holds much more memory than the
// bytes that arrived, and ends with a protocol violation, a closed stream
// or a failure the agent reported; never a hang.
func FuzzServerReadsEvents(f *testing.F) {
	value := func(size uint64) *atollv1.WorkerEvent {
		return &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Value{Value: &atollv1.WorkerValue{Size: size}}}
	}
	output := &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Output{Output: &atollv1.Output{Stream: atollv1.Stream_STREAM_STDERR, Data: []byte("x")}}}
	failure := &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Failure{Failure: &atollv1.Failure{Kind: atollv1.FailureKind_FAILURE_KIND_WORKER_CRASHED, Message: "died"}}}
	f.Add(frames(f, ready(1), output, value(2)))
	f.Add(append(frames(f, ready(1), output, value(2)), "ok"...))
	f.Add(frames(f, ready(1), value(1<<62))) // the forged frame of the trust-boundary issue
	f.Add(append(frames(f, ready(1), value(1<<30)), "short"...))
	f.Add(frames(f, ready(1), failure))
	f.Add(frames(f, value(1)))
	f.Add(rawFrame(1<<62, nil))
	f.Add(rawFrame(MaxEventBytes, []byte("short")))
	f.Add(rawFrame(3, []byte{0xff, 0xff, 0xff}))
	f.Add(bytes.Repeat([]byte{0xff}, 11))
	f.Add(append(frames(f, ready(1)), bytes.Repeat(frames(f, output), 100)...))
	f.Fuzz(func(t *testing.T, stream []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		server, agent := net.Pipe()
		c := NewConn(server)
		var wg sync.WaitGroup
		wg.Go(func() {
			agent.Write(stream)
			agent.Close()
		})
		wg.Go(func() { io.Copy(io.Discard, agent) }) // the calls the server sends
		defer func() {
			c.Close()
			agent.Close()
			wg.Wait()
		}()

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		discard := func(*atollv1.Output) {}
		_, err := c.AwaitReady(ctx, discard)
		for calls := 0; err == nil && calls < 8; calls++ {
			_, err = c.Call(ctx, []byte("fn"), []byte("args"), discard)
		}
		var failed *FailureError
		switch {
		case err == nil:
			t.Fatalf("eight calls succeeded on a stream of %d bytes", len(stream))
		case errors.Is(err, context.DeadlineExceeded):
			t.Fatalf("the server hung on a stream of %d bytes", len(stream))
		case !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrClosed) && !errors.As(err, &failed):
			t.Fatalf("the stream ended with %v; want ErrProtocol, ErrClosed or a *FailureError", err)
		}
		runtime.ReadMemStats(&after)
		if grew, bound := after.TotalAlloc-before.TotalAlloc, uint64(16<<20+256*len(stream)); grew > bound {
			t.Errorf("reading %d bytes allocated %d bytes (bound %d)", len(stream), grew, bound)
		}
	})
}
