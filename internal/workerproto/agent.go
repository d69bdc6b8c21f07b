package workerproto

import (
	"errors"
	"fmt"
	"io"
	"os"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

// AgentConn is the agent's end of the protocol stream: it reads calls and
// sends events. Send and SendValue are safe for concurrent use; ReadCall
// and Payload are for one goroutine.
type AgentConn struct {
	in  *frameReader
	out *frameWriter
}

// NewAgentConn returns the agent's end on r (calls from the server) and w
// (events to it): its stdin and stdout, or a dialed connection twice.
func NewAgentConn(r io.Reader, w io.Writer) *AgentConn {
	// Large values cross stdin and stdout in fewer wake-ups when they are
	// pipes of a larger capacity.
	for _, f := range []any{r, w} {
		if f, ok := f.(*os.File); ok {
			GrowPipe(f)
		}
	}
	c := &AgentConn{out: newFrameWriter(w)}
	if r != nil {
		c.in = newFrameReader(r)
	}
	return c
}

// Call is the header of one call; FunctionSize then ArgumentsSize raw bytes
// follow it, to be read through Payload before the next ReadCall.
type Call struct {
	FunctionSize, ArgumentsSize uint64
	// Env is set for this call only.
	Env map[string]string
}

// Size is the number of raw bytes that follow the header.
func (c Call) Size() int64 { return int64(c.FunctionSize + c.ArgumentsSize) }

// ReadCall reads the next call's header. It returns io.EOF when the server
// ended the session.
func (c *AgentConn) ReadCall() (Call, error) {
	m := new(atollv1.WorkerCall)
	if err := c.in.read(m, MaxCallHeaderBytes); err != nil {
		return Call{}, err
	}
	fn, args := m.GetFunctionSize(), m.GetArgumentsSize()
	if fn > MaxPayloadBytes || args > MaxPayloadBytes || fn+args > MaxPayloadBytes {
		return Call{}, fmt.Errorf("%w: a call of %d + %d bytes exceeds the %d byte limit", ErrProtocol, fn, args, MaxPayloadBytes)
	}
	return Call{FunctionSize: fn, ArgumentsSize: args, Env: m.GetEnv()}, nil
}

// Payload reads the raw bytes of the call just read.
func (c *AgentConn) Payload(call Call) io.Reader {
	return c.in.raw(call.Size())
}

// CopyPayload passes the raw bytes of the call just read on to dst (the
// runner's pipe), spliced where both ends allow it, so that the agent
// neither holds nor copies them.
func (c *AgentConn) CopyPayload(dst io.Writer, call Call) error {
	n, err := c.in.copyRaw(dst, call.Size())
	if err == nil && n < call.Size() {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Send sends one event; a value goes through SendValue.
func (c *AgentConn) Send(ev *atollv1.WorkerEvent) error {
	if ev.GetValue() != nil || ev.GetYielded() != nil {
		return errors.New("workerproto: a value event goes through SendValue")
	}
	return c.out.write(ev, nil)
}

// SendValue sends a returned value of size bytes, which copy writes.
func (c *AgentConn) SendValue(size int64, copy func(io.Writer) error) error {
	if size < 0 || size > MaxPayloadBytes {
		return fmt.Errorf("a %d byte value exceeds the %d byte limit", size, MaxPayloadBytes)
	}
	ev := &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Value{Value: &atollv1.WorkerValue{Size: uint64(size)}}}
	return c.out.write(ev, copy)
}

// SendYielded sends a value a generator function yielded, of size bytes,
// which copy writes.
func (c *AgentConn) SendYielded(size int64, copy func(io.Writer) error) error {
	if size < 0 || size > MaxPayloadBytes {
		return fmt.Errorf("a %d byte value exceeds the %d byte limit", size, MaxPayloadBytes)
	}
	ev := &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Yielded{Yielded: &atollv1.WorkerValue{Size: uint64(size)}}}
	return c.out.write(ev, copy)
}
