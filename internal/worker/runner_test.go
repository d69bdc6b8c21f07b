package worker

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
		{"value", rawFrame(frameResult, []byte("pickled")), &atollv1.WorkerEvent{Event: &atollv1.WorkerEvent_Value{Value: &atollv1.WorkerValue{Size: 7}}}},
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
