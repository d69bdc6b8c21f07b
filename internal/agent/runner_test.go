package agent

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

func field(s string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(s)))
	return append(b, s...)
}

func rawFrame(kind byte, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1))
	b = append(b, kind)
	return append(b, payload...)
}

func TestFrameEvents(t *testing.T) {
	exc := bytes.Join([][]byte{field("P"), field("builtins.ValueError"), field("bad"), field("Traceback...")}, nil)
	tests := []struct {
		name  string
		frame []byte
		want  *atollv1.WorkerEvent
	}{
		{"exception", rawFrame(frameException, exc), resultEvent(&atollv1.Result{Outcome: &atollv1.Result_Exception{Exception: &atollv1.RemoteException{
			Pickled: []byte("P"), TypeName: "builtins.ValueError", Message: "bad", Traceback: "Traceback...",
		}}})},
		{"unpicklable", rawFrame(frameUnpicklable, []byte("cannot pickle")), &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Failure{Failure: &atollv1.Failure{
			Kind: atollv1.FailureKind_FAILURE_KIND_SERIALIZATION, Message: "cannot pickle",
		}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := readFrame(bytes.NewReader(tt.frame))
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.event()
			if err != nil {
				t.Fatal(err)
			}
			if !cmpProto(got, tt.want) {
				t.Errorf("event = %v, want %v", got, tt.want)
			}
		})
	}
}

// A value frame's payload is left in the pipe, to be streamed upstream.
func TestValueFrameIsStreamed(t *testing.T) {
	f, err := readFrame(bytes.NewReader(rawFrame(frameResult, []byte("pickled"))))
	if err != nil {
		t.Fatal(err)
	}
	if f.kind != frameResult || f.size != 7 || f.payload != nil {
		t.Errorf("frame = %c size %d payload %q, want a value of 7 bytes left unread", f.kind, f.size, f.payload)
	}
}

func TestMalformedFramesAreErrors(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
	}{
		{"short exception", rawFrame(frameException, field("only one"))},
		{"unknown kind", rawFrame('Z', nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := readFrame(bytes.NewReader(tt.frame))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.event(); err == nil {
				t.Error("want an error")
			}
		})
	}
	if _, err := readFrame(bytes.NewReader(rawFrame(frameException, []byte("abc"))[:6])); err == nil {
		t.Error("cut frame: want an error")
	}
}

func TestWriteCallLayout(t *testing.T) {
	var buf bytes.Buffer
	if err := writeCallHeader(&buf, 2, 4); err != nil {
		t.Fatal(err)
	}
	buf.WriteString("fnargs")
	want := rawFrame(frameCall, append(binary.BigEndian.AppendUint32(nil, 2), "fnargs"...))
	if diff := cmp.Diff(want, buf.Bytes()); diff != "" {
		t.Errorf("frame (-want +got):\n%s", diff)
	}
}
