package fastcall

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

func reader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

func TestReadFrameRoundTrip(t *testing.T) {
	var b []byte
	b = AppendFrame(b, FrameRun, []byte("request"))
	b = AppendFrame(b, FramePing, nil)
	r := reader(b)
	limits := Limits{FrameRun: 16, FramePing: 0}
	kind, payload, err := ReadFrame(r, limits)
	if err != nil || kind != FrameRun || string(payload) != "request" {
		t.Fatalf("first frame = %q %q %v; want Run \"request\"", kind, payload, err)
	}
	kind, payload, err = ReadFrame(r, limits)
	if err != nil || kind != FramePing || len(payload) != 0 {
		t.Fatalf("second frame = %q %q %v; want an empty Ping", kind, payload, err)
	}
	if _, _, err := ReadFrame(r, limits); err != io.EOF {
		t.Fatalf("after the last frame: %v; want io.EOF", err)
	}
}

func TestReadFrameBounds(t *testing.T) {
	limits := Limits{FrameRun: 8, FrameCancel: 0}
	for _, tc := range []struct {
		name  string
		input []byte
		want  error
	}{
		// A length of 4 GiB is refused from the header alone: nothing of
		// it is allocated.
		{"declared length over the bound", AppendHeader(nil, FrameRun, 1<<32-1), ErrFrameTooLarge},
		{"one byte over", AppendFrame(nil, FrameRun, make([]byte, 9)), ErrFrameTooLarge},
		{"payload on an empty type", AppendFrame(nil, FrameCancel, []byte{1}), ErrFrameTooLarge},
		{"type not allowed", AppendFrame(nil, FrameHello, nil), ErrUnexpectedFrame},
		{"garbage", []byte("GET / HTTP/1.1\r\n"), ErrUnexpectedFrame},
		{"cut header", []byte{FrameRun, 0}, io.ErrUnexpectedEOF},
		{"cut payload", AppendHeader(nil, FrameRun, 8), io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ReadFrame(reader(tc.input), limits); !errors.Is(err, tc.want) {
				t.Fatalf("ReadFrame = %v; want %v", err, tc.want)
			}
		})
	}
	if _, p, err := ReadFrame(reader(AppendFrame(nil, FrameRun, make([]byte, 8))), limits); err != nil || len(p) != 8 {
		t.Fatalf("a frame at the bound: %d bytes, %v; want 8 bytes", len(p), err)
	}
}

// FuzzReadFrame: whatever a peer sends, the reader returns a frame within
// its type's bound or an error, and never allocates past the bound.
func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(nil, FrameRun, []byte("x")))
	f.Add(AppendHeader(nil, FrameRun, 1<<31))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	f.Add(AppendFrame(AppendFrame(nil, FramePing, nil), FrameCancel, nil))
	limits := Limits{FrameRun: 64, FrameCancel: 0, FramePing: 0}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := reader(data)
		for {
			kind, payload, err := ReadFrame(r, limits)
			if err != nil {
				return
			}
			max, ok := limits[kind]
			if !ok || len(payload) > max {
				t.Fatalf("frame %q of %d bytes passed limits %v", kind, len(payload), limits)
			}
		}
	})
}
