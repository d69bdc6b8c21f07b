package workerproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/sealed"
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
	// sharedValues says the call in flight takes a large value in a
	// sealed memfd (Request.OnSharedValue).
	sharedValues atomic.Bool
	// closed ends a reader blocked on a full events queue: an agent may
	// send events nobody asked for, and Close must still end its reader.
	closed    chan struct{}
	closeOnce sync.Once
}

// Halves is a stream whose two directions are files of their own (the
// agent's stdout and stdin pipes): large payloads are then spliced into
// and out of them rather than copied through the server.
type Halves interface {
	Halves() (r io.Reader, w io.Writer)
}

// NewConn starts reading the agent's events from rwc. Close ends it.
func NewConn(rwc io.ReadWriteCloser) *Conn {
	var r io.Reader = rwc
	var w io.Writer = rwc
	if h, ok := rwc.(Halves); ok {
		r, w = h.Halves()
	}
	c := &Conn{rwc: rwc, out: newFrameWriter(w), events: make(chan inbound, eventQueue), closed: make(chan struct{})}
	go c.readEvents(r)
	return c
}

// inbound is one event as read: a yielded value's raw bytes travel beside
// its header, and a value received into a sealed memfd as shared.
type inbound struct {
	ev      *atollv1.WorkerEvent
	yielded []byte
	shared  *sealed.File
}

// readEvents reads events until the stream ends or breaks the protocol; a
// value's raw bytes are read in with it and delivered as a Result, a
// yielded value's beside its event.
func (c *Conn) readEvents(r io.Reader) {
	defer close(c.events)
	in := newFrameReader(r)
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
			var value []byte
			var err error
			if c.sharedValues.Load() && v.GetSize() >= SharedValueBytes {
				msg.shared, err = c.receiveShared(in, v)
			} else {
				value, err = c.readValue(in, v)
			}
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
			if msg.shared != nil {
				msg.shared.Close()
			}
			return
		}
	}
}

// receiveShared receives a value of n bytes into a sealed memfd: from a
// pipe the bytes are spliced into it, so the server never holds them in
// its own memory. Memory grows only as the bytes arrive.
func (c *Conn) receiveShared(in *frameReader, v *atollv1.WorkerValue) (*sealed.File, error) {
	if err := checkValueSize(v); err != nil {
		return nil, err
	}
	n := int64(v.GetSize())
	f, err := sealed.Create("atoll-value")
	if err != nil {
		return nil, err
	}
	got, err := in.copyRaw(f.File(), n)
	if err == nil && got < n {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		err = f.Seal()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: a %d byte value cut short after %d: %w", ErrProtocol, n, got, err)
	}
	return f, nil
}

func (c *Conn) readValue(in *frameReader, v *atollv1.WorkerValue) ([]byte, error) {
	if err := checkValueSize(v); err != nil {
		return nil, err
	}
	return in.payload(v.GetSize())
}

// checkValueSize bounds the size a value's event states, before anything
// is allocated or received for it.
func checkValueSize(v *atollv1.WorkerValue) error {
	if v.GetSize() > MaxPayloadBytes {
		return fmt.Errorf("%w: a %d byte value exceeds the %d byte limit", ErrProtocol, v.GetSize(), MaxPayloadBytes)
	}
	return nil
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
	// SharedArguments, if set, holds the arguments instead of Arguments:
	// a sealed memfd that is spliced into the agent's stream, never read
	// into the server.
	SharedArguments *sealed.File
	// OnSharedValue, if set, receives a returned value of SharedValueBytes
	// or more in a sealed memfd (it then owns the file), before CallWith
	// returns the Result, whose value is then empty.
	OnSharedValue func(*sealed.File)
}

// SharedValueBytes is the size from which a returned value is received
// into a sealed memfd for a call with OnSharedValue.
const SharedValueBytes = 1 << 20

// CallWith is Call with the call's environment and yielded values.
func (c *Conn) CallWith(ctx context.Context, r Request) (*atollv1.Result, error) {
	fn, args, onOutput := r.Function, r.Arguments, r.OnOutput
	if !c.busy.CompareAndSwap(false, true) {
		return nil, ErrBusy
	}
	defer c.busy.Store(false)
	argsSize := uint64(len(args))
	if r.SharedArguments != nil {
		argsSize = uint64(r.SharedArguments.Size())
	}
	if uint64(len(fn))+argsSize > MaxPayloadBytes {
		return nil, fmt.Errorf("a call of %d bytes exceeds the %d byte limit", uint64(len(fn))+argsSize, MaxPayloadBytes)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.sharedValues.Store(r.OnSharedValue != nil)
	defer c.sharedValues.Store(false)
	head := &atollv1.WorkerCall{FunctionSize: uint64(len(fn)), ArgumentsSize: argsSize, Env: r.Env}
	err := c.out.write(head, func(out io.Writer) error {
		if _, err := out.Write(fn); err != nil {
			return err
		}
		if r.SharedArguments != nil {
			return out.(*rawWriter).file(r.SharedArguments.File(), int64(argsSize))
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
				if msg.shared != nil {
					r.OnSharedValue(msg.shared)
				}
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
