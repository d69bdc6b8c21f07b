package fastcall

import (
	"bytes"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

// A large request decodes to what protobuf decodes, its arguments left in
// the payload; a malformed one is refused as protobuf refuses it.
func TestUnmarshalRunMatchesProtobuf(t *testing.T) {
	big := bytes.Repeat([]byte{0xA5}, largeValueBytes+3)
	full := &atollv1.RunRequest{
		FunctionName: "f", Function: []byte("fn"), Arguments: big, MachineType: "XS",
		Environment: &atollv1.Environment{PythonVersion: "3.11", Requirements: []string{"six"}},
		Secrets:     []string{"a"}, KeepAliveSeconds: 3,
	}
	for _, req := range []*atollv1.RunRequest{full, {Arguments: big}, {FunctionName: "small", Arguments: []byte("x")}} {
		payload, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		got := new(atollv1.RunRequest)
		if err := unmarshalRun(payload, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, req) {
			t.Fatalf("unmarshalRun = %v, want %v", got, req)
		}
		if len(req.Arguments) >= largeValueBytes && !within(got.Arguments, payload) {
			t.Fatal("large arguments were copied out of the payload")
		}
		// Cut short, the payload is refused, as protobuf refuses it.
		if err := unmarshalRun(payload[:len(payload)-1], new(atollv1.RunRequest)); err == nil {
			t.Fatal("a truncated request was accepted")
		}
	}
	// The last arguments field wins, as in protobuf.
	first, _ := proto.Marshal(&atollv1.RunRequest{Arguments: big})
	second, _ := proto.Marshal(&atollv1.RunRequest{FunctionName: "g", Arguments: []byte("last")})
	got := new(atollv1.RunRequest)
	if err := unmarshalRun(append(first, second...), got); err != nil {
		t.Fatal(err)
	}
	if string(got.Arguments) != "last" || got.FunctionName != "g" {
		t.Fatalf("got arguments %q, name %q; want the last field's", got.Arguments[:min(8, len(got.Arguments))], got.FunctionName)
	}
}

// A large value's head and value concatenate to protobuf's encoding of
// its event; other events are left to protobuf.
func TestLargeValueEncodesAsProtobuf(t *testing.T) {
	big := bytes.Repeat([]byte{7}, largeValueBytes+300)
	for _, ev := range []*atollv1.RunEvent{
		{Event: &atollv1.RunEvent_Result{Result: &atollv1.Result{Outcome: &atollv1.Result_Value{Value: big}}}},
		{Event: &atollv1.RunEvent_Yielded{Yielded: big}},
	} {
		head, value, ok := largeValue(ev)
		if !ok {
			t.Fatalf("%T: not taken as a large value", ev.GetEvent())
		}
		want, _ := proto.Marshal(ev)
		if !bytes.Equal(append(head, value...), want) {
			t.Fatalf("%T: the head and value differ from protobuf's encoding", ev.GetEvent())
		}
	}
	for _, ev := range []*atollv1.RunEvent{
		{Event: &atollv1.RunEvent_Result{Result: &atollv1.Result{Outcome: &atollv1.Result_Value{Value: []byte("small")}}}},
		{Event: &atollv1.RunEvent_Result{Result: &atollv1.Result{Outcome: &atollv1.Result_Exception{Exception: &atollv1.RemoteException{Pickled: big}}}}},
		{Event: &atollv1.RunEvent_Output{Output: &atollv1.Output{Data: big}}},
	} {
		if _, _, ok := largeValue(ev); ok {
			t.Fatalf("%T taken as a large value", ev.GetEvent())
		}
	}
}

// within says whether b lies inside buf's memory.
func within(b, buf []byte) bool {
	start := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= start && p+uintptr(len(b)) <= start+uintptr(len(buf))
}
