package agent

import (
	"encoding/binary"
	"fmt"
	"io"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

// Frame types of the agent <-> runner channel; python/atoll/_runner.py is
// the other end and documents the layout.
const (
	frameCall          = 'C'
	frameReady         = 'Y'
	frameResult        = 'R'
	frameException     = 'E'
	frameUnpicklable   = 'S'
	frameYield         = 'G'
	frameEnv           = 'V'
	frameHeaderLen     = 5
	maxRunnerFrameSize = 1<<31 - 1
)

type frame struct {
	kind    byte
	payload []byte
	// size is the payload's length for a value frame, whose payload is not
	// read into memory but passed on from the pipe.
	size int64
}

// writeEnv sends the variables the next call runs with, as u32-length
// prefixed fields: name, value, name, value...
func writeEnv(w io.Writer, env map[string]string) error {
	var payload []byte
	for k, v := range env {
		payload = binary.BigEndian.AppendUint32(payload, uint32(len(k)))
		payload = append(payload, k...)
		payload = binary.BigEndian.AppendUint32(payload, uint32(len(v)))
		payload = append(payload, v...)
	}
	var head [frameHeaderLen]byte
	binary.BigEndian.PutUint32(head[0:4], uint32(1+len(payload)))
	head[4] = frameEnv
	if _, err := w.Write(head[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// writeCallHeader starts a call frame; the function's and the arguments'
// bytes must follow.
func writeCallHeader(w io.Writer, fnSize, argSize uint64) error {
	size := 1 + 4 + fnSize + argSize
	if size > maxRunnerFrameSize {
		return fmt.Errorf("call of %d bytes exceeds the %d byte limit", size, maxRunnerFrameSize)
	}
	var head [frameHeaderLen + 4]byte
	binary.BigEndian.PutUint32(head[0:4], uint32(size))
	head[4] = frameCall
	binary.BigEndian.PutUint32(head[5:9], uint32(fnSize))
	_, err := w.Write(head[:])
	return err
}

func readFrameHeader(r io.Reader) (kind byte, size int64, err error) {
	var head [frameHeaderLen]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, 0, err
	}
	n := binary.BigEndian.Uint32(head[0:4])
	if n < 1 {
		return 0, 0, fmt.Errorf("runner sent an empty frame")
	}
	return head[4], int64(n - 1), nil
}

// readFrame reads a frame whole; value frames are left for the caller to
// stream (see frame.size).
func readFrame(r io.Reader) (frame, error) {
	kind, size, err := readFrameHeader(r)
	if err != nil {
		return frame{}, err
	}
	if kind == frameResult || kind == frameYield {
		return frame{kind: kind, size: size}, nil
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return frame{}, fmt.Errorf("runner frame cut short: %w", io.ErrUnexpectedEOF)
	}
	return frame{kind: kind, payload: payload}, nil
}

// event converts a runner's answer other than a value (which is streamed,
// see Agent.report) into the event sent upstream.
func (f frame) event() (*atollv1.WorkerEvent, error) {
	switch f.kind {
	case frameException:
		fields, err := splitFields(f.payload, 4)
		if err != nil {
			return nil, err
		}
		exc := &atollv1.RemoteException{
			Pickled:   fields[0],
			TypeName:  string(fields[1]),
			Message:   string(fields[2]),
			Traceback: string(fields[3]),
		}
		return resultEvent(&atollv1.Result{Outcome: &atollv1.Result_Exception{Exception: exc}}), nil
	case frameUnpicklable:
		return &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Failure{Failure: &atollv1.Failure{
			Kind:    atollv1.FailureKind_FAILURE_KIND_SERIALIZATION,
			Message: string(f.payload),
		}}}, nil
	default:
		return nil, fmt.Errorf("runner sent unexpected frame %q", f.kind)
	}
}

func resultEvent(r *atollv1.Result) *atollv1.WorkerEvent {
	return &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Result{Result: r}}
}

func splitFields(b []byte, n int) ([][]byte, error) {
	out := make([][]byte, 0, n)
	for range n {
		if len(b) < 4 {
			return nil, fmt.Errorf("runner exception frame is malformed")
		}
		l := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(len(b)) < uint64(l) {
			return nil, fmt.Errorf("runner exception frame is malformed")
		}
		out = append(out, b[:l])
		b = b[l:]
	}
	return out, nil
}
