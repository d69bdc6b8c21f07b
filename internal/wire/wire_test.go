package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

func TestMessagesWithRawBytesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	payload := bytes.Repeat([]byte("x"), 200<<10) // past the buffers' size
	head := &atollv1.WorkerCall{CallId: "c1", FunctionSize: 3, ArgumentsSize: uint64(len(payload))}
	if err := w.WriteWith(head, func(out io.Writer) error {
		if _, err := out.Write([]byte("fn!")); err != nil {
			return err
		}
		_, err := out.Write(payload)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	tail := &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Ready{Ready: &atollv1.WorkerReady{RunnerPid: 7}}}
	if err := w.Write(tail); err != nil {
		t.Fatal(err)
	}

	r := NewReader(&buf)
	got := new(atollv1.WorkerCall)
	if err := r.Read(got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, head) {
		t.Fatalf("header = %v, want %v", got, head)
	}
	raw, err := io.ReadAll(r.Raw(int64(got.FunctionSize + got.ArgumentsSize)))
	if err != nil {
		t.Fatal(err)
	}
	if string(raw[:3]) != "fn!" || !bytes.Equal(raw[3:], payload) {
		t.Fatalf("raw bytes differ (%d bytes)", len(raw))
	}
	next := new(atollv1.WorkerEvent)
	if err := r.Read(next); err != nil || !proto.Equal(next, tail) {
		t.Fatalf("next message = %v, %v; want %v", next, err, tail)
	}
	if err := r.Read(new(atollv1.WorkerEvent)); !errors.Is(err, io.EOF) {
		t.Fatalf("at the end: err = %v, want io.EOF", err)
	}
}
