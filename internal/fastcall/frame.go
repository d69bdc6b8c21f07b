// Package fastcall owns atoll's lean transport for Run calls from callers
// on the server's own machine: a unix socket in the data directory, one
// authenticated connection per caller thread, and length-prefixed frames
// that carry the same RunRequest and RunEvent messages as gRPC. It cuts the
// caller's per-call cost to a write and a read, where grpcio's Python stack
// spends about 0.4 ms.
//
// It owns framing, the bounds on what a peer may send, the hello that
// authenticates a connection, and the adapter that hands each call to the
// Functions service's own Run handler. It decides nothing about calls:
// validation, scheduling, history and cancellation stay internal/server's;
// who a caller is stays internal/auth's.
//
// The protocol (docs/architecture.md, "Lean local calls"): every frame is a
// type byte, a big-endian uint32 payload length and the payload. The client
// opens with Hello (JSON: the protocol version and the credentials as gRPC
// metadata) and the server answers Ready or End (an error). Then, one call
// at a time: Run (a RunRequest), answered by Event frames (RunEvent) and one
// End (a status code byte and its message; code 0 is OK). Large payloads
// may travel in sealed memfds instead (shared.go: RunShared, ValueShared). Cancel stops the
// call in flight; Ping is answered by Pong at any time, so that a caller can
// tell a stopped server from a long call.
package fastcall

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Frame types. Client to server: Hello, Run, RunShared, Cancel, Ping;
// server to client: Ready, Event, ValueShared, End, Pong.
const (
	FrameHello       byte = 'H'
	FrameRun         byte = 'R'
	FrameRunShared   byte = 'F'
	FrameCancel      byte = 'C'
	FramePing        byte = 'P'
	FrameReady       byte = 'K'
	FrameEvent       byte = 'E'
	FrameValueShared byte = 'V'
	FrameEnd         byte = 'S'
	FramePong        byte = 'O'
)

// headerBytes is a frame's type byte and length.
const headerBytes = 5

// MaxHelloBytes bounds the hello: credentials only, as gRPC bounds a call's
// headers (server.DefaultMaxMetadataBytes).
const MaxHelloBytes = 16 << 10

// Limits says how long a payload each frame type may have; a type absent
// (or mapped to a negative bound) may not be sent at all.
type Limits map[byte]int

// ReadFrame reads one frame from r. The declared length is checked against
// limits before anything is allocated: a peer cannot make the reader
// allocate more than the bound of a type it may send.
func ReadFrame(r *bufio.Reader, limits Limits) (byte, []byte, error) {
	var hdr [headerBytes]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	kind := hdr[0]
	max, ok := limits[kind]
	if !ok || max < 0 {
		return kind, nil, fmt.Errorf("%w: type %q", ErrUnexpectedFrame, kind)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if uint64(n) > uint64(max) {
		return kind, nil, fmt.Errorf("%w: a %q frame of %d bytes; at most %d are allowed", ErrFrameTooLarge, kind, n, max)
	}
	if n == 0 {
		return kind, nil, nil
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return kind, nil, err
	}
	return kind, payload, nil
}

// AppendHeader appends a frame header for a payload of n bytes to b.
func AppendHeader(b []byte, kind byte, n int) []byte {
	b = append(b, kind)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// AppendFrame appends a whole frame to b.
func AppendFrame(b []byte, kind byte, payload []byte) []byte {
	return append(AppendHeader(b, kind, len(payload)), payload...)
}
