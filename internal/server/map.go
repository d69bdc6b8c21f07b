package server

import (
	"context"
	"errors"
	"io"
	"math"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/machine"
)

// mapBatch bounds the events sent in one message.
const mapBatch = 128

// maxMapWidth bounds the workers one map uses at once, whatever the
// host's capacity.
const maxMapWidth = 256

type mapStream = grpc.BidiStreamingServer[atollv1.MapRequest, atollv1.MapEvent]

// Map runs one function over a stream of items. Each item is a call of its
// own (retries, timeout and history included) leased from the function's
// warm pool, so a worker serves item after item; at most width items run at
// once, and the next item is read only when one of them is free: the
// caller's stream, not the server's memory, holds the backlog.
func (f *Functions) Map(stream mapStream) error {
	ctx := stream.Context()
	account, err := accountOf(ctx)
	if err != nil {
		return rpcStatus(f.log, err)
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	req := first.GetStart()
	if req == nil {
		return status.Error(codes.InvalidArgument, "a map starts with the function (MapRequest.start)")
	}
	spec, prepErr := f.prepare(ctx, account, req)
	var prepFailure *atollv1.Failure
	if prepErr != nil {
		prepFailure = f.failure(prepErr, req)
	}

	out := make(chan *atollv1.MapEvent, mapBatch)
	sent := make(chan struct{})
	go sendBatched(stream, out, sent)
	send := func(ev *atollv1.MapEvent) {
		select {
		case out <- ev:
		case <-ctx.Done():
		}
	}
	items := make(chan *atollv1.MapItem)
	var wg sync.WaitGroup
	width, running := f.mapWidth(req, spec), 0
	// Every worker the map starts at once waits for the same environment
	// build: its log is shown once, with the first item that asked.
	var buildLog atomic.Uint64
	serve := func() {
		defer wg.Done()
		for item := range items {
			// Once the caller has gone, an item handed over in the same
			// instant is not started: it would be a run in the history
			// that the caller never saw begin.
			if ctx.Err() != nil {
				continue
			}
			f.mapItem(ctx, spec, prepFailure, item, send, &buildLog)
		}
	}
	var recvErr error
	for {
		m, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				recvErr = err
			}
			break
		}
		batch := m.GetItems().GetItems()
		if item := m.GetItem(); item != nil {
			batch = []*atollv1.MapItem{item}
		}
		if len(batch) == 0 {
			recvErr = status.Error(codes.InvalidArgument, "a map sends its function once, then only items")
			break
		}
		for _, item := range batch {
			select {
			case items <- item:
				continue
			default:
			}
			if running < width {
				running++
				wg.Add(1)
				go serve()
			}
			select {
			case items <- item:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(items)
	wg.Wait()
	close(out)
	<-sent
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return recvErr
}

// sendBatched sends the events of out as they come; whatever else is ready
// at that moment goes in the same message, so a busy map pays gRPC's
// per-message cost once per batch, an idle one waits for nothing.
func sendBatched(stream mapStream, out <-chan *atollv1.MapEvent, done chan<- struct{}) {
	defer close(done)
	failed := false
	for ev := range out {
		batch := []*atollv1.MapEvent{ev}
	gather:
		for len(batch) < mapBatch {
			select {
			case more, ok := <-out:
				if !ok {
					break gather
				}
				batch = append(batch, more)
			default:
				break gather
			}
		}
		if failed {
			continue // drain, so that no item blocks on a stream that broke
		}
		msg := batch[0]
		if len(batch) > 1 {
			msg = &atollv1.MapEvent{Batch: batch}
		}
		if err := stream.Send(msg); err != nil {
			failed = true
		}
	}
}

// mapItem runs one item and sends its events, tagged with its index.
func (f *Functions) mapItem(ctx context.Context, spec *callSpec, prepFailure *atollv1.Failure, item *atollv1.MapItem,
	send func(*atollv1.MapEvent), buildLog *atomic.Uint64) {
	index := item.GetIndex()
	if prepFailure != nil {
		send(&atollv1.MapEvent{Index: index, Event: &atollv1.MapEvent_Failure{Failure: prepFailure}})
		return
	}
	out := f.call(ctx, spec, callArgs{inline: item.GetArguments()}, callEvents{
		status: func(st *atollv1.Status) {
			if st.GetPhase() == atollv1.Phase_PHASE_QUEUED {
				send(&atollv1.MapEvent{Index: index, Event: &atollv1.MapEvent_Status{Status: st}})
			}
		},
		output: func(o *atollv1.Output) {
			send(&atollv1.MapEvent{Index: index, Event: &atollv1.MapEvent_Output{Output: o}})
		},
		build: func(o *atollv1.Output) {
			// buildLog holds the index of the item that shows the log, plus one.
			if buildLog.CompareAndSwap(0, index+1) || buildLog.Load() == index+1 {
				send(&atollv1.MapEvent{Index: index, Event: &atollv1.MapEvent_Output{Output: o}})
			}
		},
	})
	switch {
	case ctx.Err() != nil:
	case out.failure != nil:
		send(&atollv1.MapEvent{Index: index, Event: &atollv1.MapEvent_Failure{Failure: out.failure}})
	default:
		send(&atollv1.MapEvent{Index: index, Event: &atollv1.MapEvent_Result{Result: out.result}})
	}
}

// mapWidth is how many items of a map run at once: max_concurrency, or as
// many workers of the machine type as the host holds.
func (f *Functions) mapWidth(req *atollv1.RunRequest, spec *callSpec) int {
	width := maxMapWidth
	if n := int(req.GetMaxConcurrency()); n > 0 {
		width = min(width, n)
	}
	if spec != nil && f.opts.Capacity != nil {
		width = min(width, fits(f.opts.Capacity.Host(), spec.mt))
	}
	return max(width, 1)
}

// fits is how many workers of t the host holds at once.
func fits(h machine.Host, t machine.Type) int {
	n := math.MaxInt
	if t.CPUs > 0 {
		n = min(n, int(math.Floor(h.CPUs/t.CPUs+1e-9)))
	}
	if t.MemoryBytes > 0 {
		n = min(n, int(h.MemoryBytes/t.MemoryBytes))
	}
	if t.GPUs > 0 {
		n = min(n, len(h.GPUs)/t.GPUs)
	}
	return max(n, 1)
}
