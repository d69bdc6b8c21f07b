package workerproto

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"testing"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

// filePair is the server's side of two pipes, as a launcher holds them.
type filePair struct{ r, w *os.File }

func (p filePair) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p filePair) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p filePair) Close() error                { p.w.Close(); return p.r.Close() }

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
// header.
func TestLargeValuesSpliceThroughTheAgent(t *testing.T) {
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
			res, err := c.Call(context.Background(), fn, args, func(*atollv1.Output) {})
			if err != nil {
				t.Fatal(err)
			}
			if err := <-agentDone; err != nil {
				t.Fatal(err)
			}
			if got, want := res.GetValue(), append(append([]byte{}, fn...), args...); !bytes.Equal(got, want) {
				t.Fatalf("value of %d bytes differs from the %d sent", len(got), len(want))
			}
		})
	}
}
