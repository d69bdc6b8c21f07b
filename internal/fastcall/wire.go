package fastcall

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

// largeValueBytes is the size from which a call's arguments, or a value it
// returns or yields, stay in the buffer they arrived in rather than being
// copied into (or out of) a protobuf message: a 100 MB argument costs the
// server a read and a write, not two more copies.
const largeValueBytes = 1 << 20

// The fields the lean transport reads or writes by hand: RunRequest's
// arguments; RunEvent's result and yielded; Result's value.
const (
	runArgumentsField protowire.Number = 3
	eventResultField  protowire.Number = 3
	eventYieldedField protowire.Number = 5
	resultValueField  protowire.Number = 1
)

// unmarshalRun decodes a RunRequest whose arguments, when large, refer to
// payload itself instead of a copy. The fields are checked as protobuf
// checks them; as protobuf does, the last arguments field in the payload
// wins.
func unmarshalRun(payload []byte, req *atollv1.RunRequest) error {
	if len(payload) < largeValueBytes {
		return proto.Unmarshal(payload, req)
	}
	var args []byte
	found := false
	rest := make([]byte, 0, 4<<10)
	for b := payload; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		if num == runArgumentsField && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[n : n+m])
			args, found = v, true
		} else {
			rest = append(rest, b[:n+m]...)
		}
		b = b[n+m:]
	}
	if err := proto.Unmarshal(rest, req); err != nil {
		return err
	}
	if found {
		req.Arguments = args
	}
	return nil
}

// largeValue is the value of an event that carries a large one (a result's
// value or a yielded value): its encoding up to the value, and the value,
// which is then written from where it is rather than copied behind that.
// ok is false for any other event.
func largeValue(ev *atollv1.RunEvent) (head, value []byte, ok bool) {
	switch e := ev.GetEvent().(type) {
	case *atollv1.RunEvent_Yielded:
		if len(e.Yielded) < largeValueBytes {
			return nil, nil, false
		}
		head = protowire.AppendTag(nil, eventYieldedField, protowire.BytesType)
		return protowire.AppendVarint(head, uint64(len(e.Yielded))), e.Yielded, true
	case *atollv1.RunEvent_Result:
		v, isValue := e.Result.GetOutcome().(*atollv1.Result_Value)
		if !isValue || len(v.Value) < largeValueBytes {
			return nil, nil, false
		}
		n := len(v.Value)
		inner := protowire.SizeTag(resultValueField) + protowire.SizeBytes(n)
		head = protowire.AppendTag(nil, eventResultField, protowire.BytesType)
		head = protowire.AppendVarint(head, uint64(inner))
		head = protowire.AppendTag(head, resultValueField, protowire.BytesType)
		return protowire.AppendVarint(head, uint64(n)), v.Value, true
	}
	return nil, nil, false
}
