package workerproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

// eventQueue is how many events the reader may run ahead of the caller.
const eventQueue = 64

// Conn is the server's end of one worker's protocol stream. It serves one
// call at a time; a reader goroutine turns the stream into events from the
// start, so the agent never blocks on an unread pipe.
type Conn struct {
	rwc    io.ReadWriteCloser
	out    *frameWriter
	events chan inbound
	// readErr is why the event stream ended; set before events is closed.
	readErr error
	busy    atomic.Bool
	// closed ends a reader blocked on a full events queue: an agent may
	// send events nobody asked for, and Close must still end its reader.
	closed    chan struct{}
	closeOnce sync.Once
}

// NewConn starts reading the agent's events from rwc. Close ends it.
func NewConn(rwc io.ReadWriteCloser) *Conn {
	c := &Conn{rwc: rwc, out: newFrameWriter(rwc), events: make(chan inbound, eventQueue), closed: make(chan struct{})}
	go c.readEvents()
	return c
}

// inbound is one event as read: a yielded value's raw bytes travel beside
// its header.
type inbound struct {
	ev      *atollv1.WorkerEvent
	yielded []byte
}

// readEvents reads events until the stream ends or breaks the protocol; a
// value's raw bytes are read in with it and delivered as a Result, a
// yielded value's beside its event.
func (c *Conn) readEvents() {
	defer close(c.events)
	in := newFrameReader(c.rwc)
	for {
		ev := new(atollv1.WorkerEvent)
		if err := in.read(ev, MaxEventBytes); err != nil {
			if !errors.Is(err, io.EOF) {
				c.readErr = err
			}
			return
		}
		var msg inbound
		if v := ev.GetValue(); v != nil {
			value, err := c.readValue(in, v)
			if err != nil {
				c.readErr = err
				return
			}
			ev = &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Result{Result: &atollv1.Result{Outcome: &atollv1.Result_Value{Value: value}}}}
		} else if v := ev.GetYielded(); v != nil {
			value, err := c.readValue(in, v)
			if err != nil {
				c.readErr = err
				return
			}
			msg.yielded = value
		}
		msg.ev = ev
		select {
		case c.events <- msg:
		case <-c.closed:
			return
		}
	}
}

func (c *Conn) readValue(in *frameReader, v *atollv1.WorkerValue) ([]byte, error) {
	if v.GetSize() > MaxPayloadBytes {
		return nil, fmt.Errorf("%w: a %d byte value exceeds the %d byte limit", ErrProtocol, v.GetSize(), MaxPayloadBytes)
	}
	return in.payload(v.GetSize())
}

// ended is the error for an event stream that ended early.
func (c *Conn) ended() error {
	if c.readErr != nil {
		return c.readErr
	}
	return ErrClosed
}

// Ready describes a worker whose runner is up.
type Ready struct {
	RunnerPID int
}

// AwaitReady waits for the agent's ready event; output the agent writes
// while starting (a build log, an interpreter's complaint) goes to
// onOutput. It fails with a *FailureError the agent reported, ErrClosed,
// ErrProtocol or ctx's error.
func (c *Conn) AwaitReady(ctx context.Context, onOutput func(*atollv1.Output)) (Ready, error) {
	for {
		select {
		case <-ctx.Done():
			return Ready{}, ctx.Err()
		case msg, ok := <-c.events:
			if !ok {
				return Ready{}, c.ended()
			}
			ev := msg.ev
			switch e := ev.Event.(type) {
			case *atollv1.WorkerEvent_Ready:
				return Ready{RunnerPID: int(e.Ready.GetRunnerPid())}, nil
			case *atollv1.WorkerEvent_Output:
				onOutput(e.Output)
			case *atollv1.WorkerEvent_Failure:
				return Ready{}, &FailureError{Failure: e.Failure}
			default:
				return Ready{}, fmt.Errorf("%w: %T before ready", ErrProtocol, ev.Event)
			}
		}
	}
}

// Call runs one call of the serialized function fn with the serialized
// arguments args. Output events go to onOutput as they arrive. It returns
// the result (a value or the raised exception), or an error: a
// *FailureError the agent reported, ErrClosed when the stream ended,
// ErrProtocol, or ctx's error when ctx ended first, the call then still
// running: the caller must kill the worker, as a Python call cannot be
// interrupted safely.
func (c *Conn) Call(ctx context.Context, fn, args []byte, onOutput func(*atollv1.Output)) (*atollv1.Result, error) {
	return c.CallWith(ctx, Request{Function: fn, Arguments: args, OnOutput: onOutput})
}

// Request is one call with everything it may carry.
type Request struct {
	Function, Arguments []byte
	// Env is set in the runner for this call only.
	Env map[string]string
	// OnOutput receives output events as they arrive.
	OnOutput func(*atollv1.Output)
	// OnYield receives each value a generator function yields; a yielded
	// value with no OnYield breaks the protocol.
	OnYield func([]byte)
}

// CallWith is Call with the call's environment and yielded values.
func (c *Conn) CallWith(ctx context.Context, r Request) (*atollv1.Result, error) {
	fn, args, onOutput := r.Function, r.Arguments, r.OnOutput
	if !c.busy.CompareAndSwap(false, true) {
		return nil, ErrBusy
	}
	defer c.busy.Store(false)
	if uint64(len(fn))+uint64(len(args)) > MaxPayloadBytes {
		return nil, fmt.Errorf("a call of %d bytes exceeds the %d byte limit", len(fn)+len(args), MaxPayloadBytes)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	head := &atollv1.WorkerCall{FunctionSize: uint64(len(fn)), ArgumentsSize: uint64(len(args)), Env: r.Env}
	err := c.out.write(head, func(out io.Writer) error {
		if _, err := out.Write(fn); err != nil {
			return err
		}
		_, err := out.Write(args)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: send the call: %w", ErrClosed, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case msg, ok := <-c.events:
			if !ok {
				return nil, c.ended()
			}
			ev := msg.ev
			switch e := ev.Event.(type) {
			case *atollv1.WorkerEvent_Output:
				onOutput(e.Output)
			case *atollv1.WorkerEvent_Yielded:
				if r.OnYield == nil {
					return nil, fmt.Errorf("%w: a yielded value for a call that takes none", ErrProtocol)
				}
				r.OnYield(msg.yielded)
			case *atollv1.WorkerEvent_Result:
				return e.Result, nil
			case *atollv1.WorkerEvent_Failure:
				return nil, &FailureError{Failure: e.Failure}
			default:
				return nil, fmt.Errorf("%w: %T during a call", ErrProtocol, ev.Event)
			}
		}
	}
}

// Close ends the stream; the agent sees its end and exits.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.rwc.Close()
}
