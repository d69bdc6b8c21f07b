package fastcall_test

import (
	"encoding/json"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/fastcall"
	"github.com/atoll-dev/atoll/internal/sealed"
	"github.com/atoll-dev/atoll/internal/server"
)

// shareEcho answers a call whose arguments came in shared memory with a
// value in shared memory: "got " and the arguments; any other call as echo.
func shareEcho(req *atollv1.RunRequest, stream grpc.ServerStreamingServer[atollv1.RunEvent]) error {
	s, ok := stream.(server.SharedStream)
	if !ok || s.SharedArguments() == nil {
		return echo(req, stream)
	}
	args := s.SharedArguments()
	b, err := io.ReadAll(io.NewSectionReader(args.File(), 0, args.Size()))
	if err != nil {
		return err
	}
	if !s.SharesValues() {
		return stream.Send(&atollv1.RunEvent{Event: &atollv1.RunEvent_Result{Result: &atollv1.Result{
			Outcome: &atollv1.Result_Value{Value: append([]byte("inline "), b...)}}}})
	}
	v, err := sealed.Create("value")
	if err != nil {
		return err
	}
	v.File().Write(append([]byte("got "), b...))
	if err := v.Seal(); err != nil {
		return err
	}
	return s.SendSharedValue(v)
}

// memfd is a memfd holding content, sealed with seals.
func memfd(t *testing.T, content string, seals int) int {
	t.Helper()
	fd, err := unix.MemfdCreate("args", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.Write(fd, []byte(content)); err != nil {
		t.Fatal(err)
	}
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

const allSeals = unix.F_SEAL_SEAL | unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK

// sharedClient is a client that says it takes shared memory, and reads
// frames straight from the socket so that descriptors are received.
type sharedClient struct {
	*client
	uc  *net.UnixConn
	buf []byte
	fds []int
}

func (f *fixture) dialShared(t *testing.T, id, secret string) *sharedClient {
	t.Helper()
	c := &sharedClient{client: f.dial(t)}
	c.uc = c.nc.(*net.UnixConn)
	b, _ := json.Marshal(map[string]any{"version": 1, "shared_memory": true,
		"metadata": map[string]string{auth.MetadataKeyID: id, auth.MetadataKeySecret: secret}})
	c.send(fastcall.FrameHello, b)
	kind, payload := c.frame()
	if kind != fastcall.FrameReady || !strings.Contains(string(payload), `"shared_memory":true`) {
		t.Fatalf("hello answered with %q %s; want Ready with shared memory", kind, payload)
	}
	return c
}

func (c *sharedClient) frame() (byte, []byte) {
	c.t.Helper()
	for {
		if len(c.buf) >= 5 {
			n := int(c.buf[1])<<24 | int(c.buf[2])<<16 | int(c.buf[3])<<8 | int(c.buf[4])
			if len(c.buf) >= 5+n {
				kind, payload := c.buf[0], append([]byte(nil), c.buf[5:5+n]...)
				c.buf = c.buf[5+n:]
				return kind, payload
			}
		}
		p, oob := make([]byte, 64<<10), make([]byte, 256)
		n, oobn, _, _, err := c.uc.ReadMsgUnix(p, oob)
		if err != nil {
			c.t.Fatalf("reading a frame: %v", err)
		}
		if oobn > 0 {
			msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
			for i := range msgs {
				fds, _ := syscall.ParseUnixRights(&msgs[i])
				c.fds = append(c.fds, fds...)
			}
		}
		c.buf = append(c.buf, p[:n]...)
	}
}

// runShared sends a RunShared frame carrying fds (none, one, or more).
func (c *sharedClient) runShared(name string, fds ...int) {
	c.t.Helper()
	b, _ := proto.Marshal(&atollv1.RunRequest{FunctionName: name, Function: []byte("f"),
		Environment: &atollv1.Environment{PythonVersion: "3.11"}})
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	if _, _, err := c.uc.WriteMsgUnix(fastcall.AppendFrame(nil, fastcall.FrameRunShared, b), oob, nil); err != nil {
		c.t.Fatal(err)
	}
}

// endShared reads up to the End: its code and message, and the value of a
// ValueShared frame, read from its descriptor.
func (c *sharedClient) endShared() (codes.Code, string, string) {
	c.t.Helper()
	var value string
	for {
		kind, payload := c.frame()
		switch kind {
		case fastcall.FrameValueShared:
			if len(c.fds) != 1 {
				c.t.Fatalf("a Value frame with %d descriptors; want 1", len(c.fds))
			}
			fd := c.fds[0]
			c.fds = nil
			b := make([]byte, 1<<10)
			n, err := unix.Pread(fd, b, 0)
			unix.Close(fd)
			if err != nil {
				c.t.Fatal(err)
			}
			value = string(b[:n])
		case fastcall.FrameEvent:
			ev := new(atollv1.RunEvent)
			proto.Unmarshal(payload, ev)
			value = string(ev.GetResult().GetValue())
		case fastcall.FrameEnd:
			return codes.Code(payload[0]), string(payload[1:]), value
		}
	}
}

func TestSharedArgumentsAndValue(t *testing.T) {
	f := newFixture(t, fastcall.Options{Run: shareEcho})
	c := f.dialShared(t, "ak_a", "sa")
	for _, args := range []string{"first", "second"} {
		c.runShared("shared", memfd(t, args, allSeals))
		if code, msg, value := c.endShared(); code != codes.OK || value != "got "+args {
			t.Fatalf("a shared call = %v %q %q; want OK with %q", code, msg, value, "got "+args)
		}
	}
	// A client that does not say it takes shared memory gets values
	// inline, though its arguments may still come shared.
	plain := &sharedClient{client: f.dial(t)}
	plain.uc = plain.nc.(*net.UnixConn)
	plain.hello("ak_a", "sa")
	plain.frame()
	plain.runShared("shared", memfd(t, "old", allSeals))
	if code, msg, value := plain.endShared(); code != codes.OK || value != "inline old" {
		t.Fatalf("a call from a client without shared values = %v %q %q", code, msg, value)
	}
}

// TestSharedMemoryAttacks performs each attack with real descriptors on a
// real socket: it fails with a clear error, and the server serves on.
func TestSharedMemoryAttacks(t *testing.T) {
	f := newFixture(t, fastcall.Options{Run: shareEcho, MaxMessageBytes: 1 << 10})
	refusedThenServed := func(t *testing.T, fd int, want codes.Code, words string) {
		c := f.dialShared(t, "ak_a", "sa")
		c.runShared("shared", fd)
		if code, msg, _ := c.endShared(); code != want || !strings.Contains(msg, words) {
			t.Fatalf("%v %q; want %v saying %q", code, msg, want, words)
		}
		c.runShared("shared", memfd(t, "next", allSeals))
		if code, msg, value := c.endShared(); code != codes.OK || value != "got next" {
			t.Fatalf("the next call on the connection = %v %q %q", code, msg, value)
		}
	}
	t.Run("unsealed memfd", func(t *testing.T) {
		refusedThenServed(t, memfd(t, "x", 0), codes.InvalidArgument, "sealed memfd")
	})
	t.Run("memfd still writable", func(t *testing.T) {
		refusedThenServed(t, memfd(t, "x", unix.F_SEAL_GROW|unix.F_SEAL_SHRINK), codes.InvalidArgument, "sealed memfd")
	})
	t.Run("a pipe", func(t *testing.T) {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p[0])
		defer unix.Close(p[1])
		refusedThenServed(t, p[0], codes.InvalidArgument, "sealed memfd")
	})
	t.Run("arguments larger than the bound", func(t *testing.T) {
		refusedThenServed(t, memfd(t, strings.Repeat("x", 2<<10), allSeals), codes.ResourceExhausted, "--max-message-bytes")
	})
	t.Run("no descriptor", func(t *testing.T) {
		c := f.dialShared(t, "ak_a", "sa")
		c.runShared("shared")
		if code, msg, _ := c.endShared(); code != codes.InvalidArgument || !strings.Contains(msg, "without its descriptor") {
			t.Fatalf("%v %q; want InvalidArgument", code, msg)
		}
		if !c.closed() {
			t.Fatal("the connection stayed open")
		}
	})
	t.Run("two descriptors", func(t *testing.T) {
		c := f.dialShared(t, "ak_a", "sa")
		c.runShared("shared", memfd(t, "a", allSeals), memfd(t, "b", allSeals))
		if code, msg, _ := c.endShared(); code != codes.InvalidArgument || !strings.Contains(msg, "descriptor") {
			t.Fatalf("%v %q; want InvalidArgument", code, msg)
		}
		if !c.closed() {
			t.Fatal("the connection stayed open")
		}
	})
	t.Run("descriptor before the hello is dropped", func(t *testing.T) {
		c := &sharedClient{client: f.dial(t)}
		c.uc = c.nc.(*net.UnixConn)
		b, _ := json.Marshal(map[string]any{"version": 1, "shared_memory": true,
			"metadata": map[string]string{auth.MetadataKeyID: "ak_a", auth.MetadataKeySecret: "sa"}})
		c.uc.WriteMsgUnix(fastcall.AppendFrame(nil, fastcall.FrameHello, b), syscall.UnixRights(memfd(t, "early", allSeals)), nil)
		if kind, _ := c.frame(); kind != fastcall.FrameReady {
			t.Fatalf("hello answered with %q", kind)
		}
		c.runShared("shared")
		if code, msg, _ := c.endShared(); code != codes.InvalidArgument || !strings.Contains(msg, "without its descriptor") {
			t.Fatalf("%v %q; want the early descriptor not taken", code, msg)
		}
	})
	t.Run("shared frame without the hello", func(t *testing.T) {
		c := &sharedClient{client: f.dial(t)}
		c.uc = c.nc.(*net.UnixConn)
		c.runShared("shared", memfd(t, "x", allSeals))
		if code, _, _ := c.endShared(); code != codes.InvalidArgument {
			t.Fatalf("%v; want InvalidArgument", code)
		}
	})
	f.served(t)
	time.Sleep(10 * time.Millisecond)
}
