package workerproto

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"testing"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/sealed"
)

// filePair is the server's side of two pipes, as a launcher holds them.
type filePair struct{ r, w *os.File }

func (p filePair) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p filePair) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p filePair) Close() error                { p.w.Close(); return p.r.Close() }

// Halves lets payloads be spliced into and out of the pipes themselves.
func (p filePair) Halves() (io.Reader, io.Writer) { return p.r, p.w }

func osPipe(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// A call's bytes and the value sent back cross the agent by splice, from
// and to pipes or a unix socket, and arrive whole: several MiB, more than
// any pipe holds, with bytes of the payload already read ahead with the
// header; in memory, or (shared) the arguments in a sealed memfd whose own
// file position is at its end (it is read at offsets) and the value
// received into one.
func TestLargeValuesSpliceThroughTheAgent(t *testing.T) {
	for _, shared := range []bool{false, true} {
		name := "in memory"
		if shared {
			name = "shared"
		}
		t.Run(name, func(t *testing.T) { testLargeValues(t, shared) })
	}
}

func testLargeValues(t *testing.T, shared bool) {
	if shared && !sealed.Supported() {
		t.Skip("this system has no sealed memfds")
	}
	transports := map[string]func(t *testing.T) (io.ReadWriteCloser, io.Reader, io.Writer){
		"pipes": func(t *testing.T) (io.ReadWriteCloser, io.Reader, io.Writer) {
			inR, inW := osPipe(t)
			outR, outW := osPipe(t)
			return filePair{r: outR, w: inW}, inR, outW
		},
		"unix socket": func(t *testing.T) (io.ReadWriteCloser, io.Reader, io.Writer) {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: t.TempDir() + "/s", Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan *net.UnixConn, 1)
			go func() { c, _ := ln.AcceptUnix(); accepted <- c }()
			client, err := net.DialUnix("unix", nil, ln.Addr().(*net.UnixAddr))
			if err != nil {
				t.Fatal(err)
			}
			server := <-accepted
			t.Cleanup(func() { client.Close(); server.Close() })
			return server, client, client
		},
	}
	for name, transport := range transports {
		t.Run(name, func(t *testing.T) {
			serverSide, agentIn, agentOut := transport(t)
			c := NewConn(serverSide)
			defer c.Close()
			a := NewAgentConn(agentIn, agentOut)
			callR, callW := osPipe(t) // the runner's call pipe
			resR, resW := osPipe(t)   // and its result pipe
			GrowPipe(callW)
			// The runner: reads the whole call, then echoes it.
			go func() {
				defer resW.Close()
				b, _ := io.ReadAll(callR)
				_, _ = resW.Write(b)
			}()
			agentDone := make(chan error, 1)
			go func() {
				agentDone <- func() error {
					if err := a.Send(ready(1)); err != nil {
						return err
					}
					call, err := a.ReadCall()
					if err != nil {
						return err
					}
					if err := a.CopyPayload(callW, call); err != nil {
						return err
					}
					callW.Close()
					return a.SendValue(call.Size(), func(w io.Writer) error {
						_, err := io.CopyN(w, resR, call.Size())
						return err
					})
				}()
			}()
			if _, err := c.AwaitReady(context.Background(), func(*atollv1.Output) {}); err != nil {
				t.Fatal(err)
			}
			fn := []byte("function")
			args := make([]byte, 6<<20+123)
			if _, err := rand.Read(args); err != nil {
				t.Fatal(err)
			}
			req := Request{Function: fn, Arguments: args, OnOutput: func(*atollv1.Output) {}}
			var value *sealed.File
			if shared {
				f, err := sealed.Create("args")
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				f.File().Write(args)
				if err := f.Seal(); err != nil {
					t.Fatal(err)
				}
				f.File().Seek(0, io.SeekEnd)
				req.Arguments, req.SharedArguments = nil, f
				req.OnSharedValue = func(v *sealed.File) { value = v }
			}
			res, err := c.CallWith(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-agentDone; err != nil {
				t.Fatal(err)
			}
			got := res.GetValue()
			if shared {
				if value == nil || len(got) != 0 {
					t.Fatalf("a shared call's value came inline (%d bytes), not in a memfd", len(got))
				}
				defer value.Close()
				if got, err = io.ReadAll(io.NewSectionReader(value.File(), 0, value.Size())); err != nil {
					t.Fatal(err)
				}
				if _, err := value.File().Write([]byte("x")); err == nil {
					t.Fatal("the value's memfd is not sealed")
				}
			}
			if want := append(append([]byte{}, fn...), args...); !bytes.Equal(got, want) {
				t.Fatalf("value of %d bytes differs from the %d sent", len(got), len(want))
			}
		})
	}
}

// An agent that states a large value and sends only part of it, then goes
// away, fails the call as a protocol error: nothing half-received is
// handed on as the value.
func TestSharedValueCutShort(t *testing.T) {
	if !sealed.Supported() {
		t.Skip("this system has no sealed memfds")
	}
	inR, inW := osPipe(t)
	outR, outW := osPipe(t)
	c := NewConn(filePair{r: outR, w: inW})
	defer c.Close()
	a := NewAgentConn(inR, outW)
	go func() {
		defer outW.Close()
		if a.Send(ready(1)) != nil {
			return
		}
		if _, err := a.ReadCall(); err != nil {
			return
		}
		_ = a.SendValue(4<<20, func(w io.Writer) error {
			_, err := w.Write(make([]byte, 1<<20))
			return err
		})
	}()
	if _, err := c.AwaitReady(context.Background(), func(*atollv1.Output) {}); err != nil {
		t.Fatal(err)
	}
	handed := false
	_, err := c.CallWith(context.Background(), Request{Function: []byte("f"), OnOutput: func(*atollv1.Output) {},
		OnSharedValue: func(v *sealed.File) { handed = true; v.Close() }})
	if !errors.Is(err, ErrProtocol) || handed {
		t.Fatalf("a value cut short: err %v, handed on %v; want ErrProtocol and nothing handed on", err, handed)
	}
}
